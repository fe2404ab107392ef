"""A dataset mapper whose failures name the image: a file that breaks inside a data-loader
worker (deleted, truncated or replaced after the checks at start) is reported as a
:class:`DatasetError` with its file name and image id instead of PIL's bare message."""

from .lvis_json import DatasetError

__all__ = ["NamedErrorMapper"]


class NamedErrorMapper:
    """Wraps a mapper (e.g. detectron2's ``DatasetMapper``): ``mapper(record)`` as before, but
    an exception raised for a record becomes a one-line DatasetError naming ``file_name`` and
    ``image_id`` (the original is kept as ``__cause__``)."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, record: dict):
        try:
            return self.mapper(record)
        except DatasetError:
            raise
        except Exception as e:
            message = " ".join(str(e).split())
            raise DatasetError(
                f"image id {record.get('image_id')}: 'file_name' {record.get('file_name')}: "
                f"cannot be loaded ({type(e).__name__}: {message})"
            ) from e

    def __repr__(self):
        return f"NamedErrorMapper({self.mapper!r})"
