"""The workflow registry's record types.

``WorkflowInfo`` lives here, not in ``models.py``, because listing workflows
must stay free of SQLAlchemy: this module imports only the standard library.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class WorkflowInfo:
    """What the registry says of one registered workflow."""

    name: str
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The snake_case JSON form."""
        return asdict(self)
