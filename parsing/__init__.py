"""Face parsing: label sets, synthetic faces, parser models and readers."""

from parsing.core.errors import DataError, InputError, LabelError
from parsing.core.labels import FSE10, FSE25, LabelSet, convert, get_label_set
from parsing.parser.inference import Parser
from parsing.parser.models import create_model

__all__ = ["DataError", "FSE10", "FSE25", "InputError", "LabelError", "LabelSet", "convert",
           "get_label_set"]
__all__ += ["Parser", "create_model"]
