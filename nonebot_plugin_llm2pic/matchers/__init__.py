"""Chat entry points: thin handlers that parse, call the store or pipeline, and reply."""

from . import admin as admin
from . import draw as draw
from . import record as record
