"""The page policy admits the configured map tile server, and nothing a template smuggles in."""

from __future__ import annotations

import pytest

from hub.api.security import page_policy, tile_source


@pytest.mark.parametrize(
    ("template", "source"),
    [
        ("https://tiles.example.org/{z}/{x}/{y}.png", "https://tiles.example.org"),
        ("https://{s}.tile.example.org/{z}/{x}/{y}.png", "https://*.tile.example.org"),
        ("http://tiles.test/{z}/{x}/{y}.png", "http://tiles.test"),
        ("http://127.0.0.1:8081/{z}/{x}/{y}.png", "http://127.0.0.1:8081"),
        ("https://user:secret@tiles.example.org/{z}/{x}/{y}.png", "https://tiles.example.org"),
        (
            "https://t{s}.tianditu.gov.cn/vec_w/wmts?SERVICE=WMTS&TILEMATRIX={z}&tk=key",
            "https://*.tianditu.gov.cn",
        ),
        (
            "https://webrd0{s}.is.autonavi.com/appmaptile?x={x}&y={y}&z={z}",
            "https://*.is.autonavi.com",
        ),
        # Nothing to admit, or nothing CSP can say: the offline map, never a wider policy.
        (None, None),
        ("", None),
        ("/tiles/{z}/{x}/{y}.png", None),
        ("javascript:alert(1)//{z}", None),
        ("data:image/png;base64,AAAA", None),
        ("ftp://tiles.example.org/{z}/{x}/{y}.png", None),
        ("https://tiles.{s}.example.org/{z}.png", None),
        ("https://{s}/{z}.png", None),
        ("https://tiles.example.org;script-src *;/{z}.png", None),
        ("https://tiles.example.org 'unsafe-inline'/{z}.png", None),
        ("https://tiles.example.org:{port}/{z}.png", None),
        ("https://[::1]:8080/{z}.png", None),
    ],
)
def test_a_tile_template_gives_one_origin_or_none(template: str | None, source: str | None) -> None:
    """The source admitted for tiles is the template's origin, or nothing at all."""
    assert tile_source(template) == source
    policy = page_policy(template)
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["img-src"] == "'self' data:" + (f" {source}" if source else "")
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
