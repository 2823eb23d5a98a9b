"""piwm_lib: the library behind the PIWM course (Physics-Informed BEV World Model, arXiv 2509.12437)."""

__version__ = "0.1.0"
