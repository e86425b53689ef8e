"""A params model whose module prints when it is imported: after plugin loading, on first use."""

from pydantic import BaseModel

print("hello from the prints plugin's params model, at import")


class Params(BaseModel):
    who: str = "world"
