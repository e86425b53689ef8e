from pydantic import BaseModel, Field


class GreetParams(BaseModel):
    who: str = Field(default="world", min_length=1)
