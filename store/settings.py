"""One settings class for every Breadcrumb process, read from `BREADCRUMB_*` environment variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from journeys.policy import Policy, load_policy

REPO_ROOT = Path(__file__).resolve().parent.parent


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BREADCRUMB_", extra="ignore")

    database_url: str = "sqlite:///./data/breadcrumb.db"
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    task_queue: str = "breadcrumb"
    write_keys: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cio_site_id: str = ""
    cio_api_key: str = ""
    admin_token: str = ""
    journeys: Path = REPO_ROOT / "journeys.toml"
    smtp_url: str = ""
    sms_webhook_url: str = ""
    default_phone_region: str = "US"
    auto_migrate: bool = False
    dispatch: bool = True

    _split_write_keys = field_validator("write_keys", mode="before")(_comma_list)

    @cached_property
    def policy(self) -> Policy:
        return load_policy(self.journeys)
