"""Data streams."""


class DataError(ValueError):
    """The corpus, tokenizer, images or token files cannot give what the config asks for."""
