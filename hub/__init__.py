"""carehub: a monitoring hub for integrated elderly-care and childcare facilities."""

__version__ = "0.1.0"
