"""The tokens a hub process trusts through a database outage (hub/live.py TrustedTokens)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hub.live import TrustedTokens

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def test_a_token_is_trusted_until_it_expires_and_no_longer() -> None:
    trusted: TrustedTokens[str] = TrustedTokens()
    trusted.trust("d1", "nurse", "nurse's scope", NOW + timedelta(hours=1))
    assert trusted.vouched("d1", NOW) == "nurse's scope"
    assert trusted.vouched("d1", NOW + timedelta(minutes=59)) == "nurse's scope"
    assert trusted.vouched("d1", NOW + timedelta(hours=1)) is None
    # Expired is gone, not just hidden.
    assert len(trusted) == 0
    assert trusted.vouched("d1", NOW) is None
    assert trusted.vouched("never", NOW) is None


def test_an_account_change_forgets_that_accounts_tokens_and_a_missed_one_forgets_all() -> None:
    trusted: TrustedTokens[str] = TrustedTokens()
    until = NOW + timedelta(hours=12)
    for digest, user in (("a1", "amy"), ("a2", "amy"), ("b1", "bo"), ("c1", "cy")):
        trusted.trust(digest, user, user, until)
    trusted.forget("amy")
    assert [trusted.vouched(d, NOW) for d in ("a1", "a2", "b1")] == [None, None, "bo"]
    trusted.forget("nobody")
    assert len(trusted) == 2
    trusted.discard("b1")  # the database said no to this one token
    assert (trusted.vouched("b1", NOW), trusted.vouched("c1", NOW)) == (None, "cy")
    trusted.discard("b1")
    trusted.forget(None)
    assert len(trusted) == 0


def test_it_is_bounded_and_the_least_recently_vouched_goes_first() -> None:
    trusted: TrustedTokens[int] = TrustedTokens(size=3)
    until = NOW + timedelta(hours=12)
    for n in range(3):
        trusted.trust(f"t{n}", f"u{n}", n, until)
    trusted.trust("t0", "u0", 0, until)  # vouched again: now the newest
    trusted.trust("t3", "u3", 3, until)
    assert len(trusted) == 3
    assert trusted.vouched("t1", NOW) is None
    assert [trusted.vouched(t, NOW) for t in ("t0", "t2", "t3")] == [0, 2, 3]
