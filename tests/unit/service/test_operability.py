"""What an operator configures: every environment variable, named once and documented."""

from __future__ import annotations

import pytest

from shotstamp_service.config import Config
from tests.kit import ROOT


def test_config_names_every_variable_once_and_checks_values():
    from pathlib import Path

    from shotstamp_service.config import ENV_VARS

    assert len(set(ENV_VARS.values())) == len(ENV_VARS)
    config = Config.from_env(
        {"SHOTSTAMP_DATABASE_URL": "postgresql://u@h/db", "SHOTSTAMP_LOG_FORMAT": "text"}
    )
    assert config.database_url == "postgresql://u@h/db" and config.shared_store
    assert not Config.from_env({}).shared_store
    with pytest.raises(ValueError, match="postgresql://"):
        Config.from_env({"SHOTSTAMP_DATABASE_URL": "mysql://h/db"})
    with pytest.raises(ValueError, match="log format"):
        Config.from_env({"SHOTSTAMP_LOG_FORMAT": "xml"})
    config = Config.from_env({"SHOTSTAMP_INDEX_DIR": "/srv/index",
                              "SHOTSTAMP_INDEX_SEGMENT_INTERVAL": "2.5"})
    assert (config.index_path, config.index_segment_interval) == (Path("/srv/index"), 2.5)
    assert Config.from_env({"SHOTSTAMP_DATA_DIR": "/d"}).index_path == Path("/d/index")
    with pytest.raises(ValueError, match="segment interval"):
        Config.from_env({"SHOTSTAMP_INDEX_SEGMENT_INTERVAL": "0"})


def test_the_docs_document_every_environment_variable():

    from shotstamp_service.config import ENV_VARS

    # docs/operations.md has every setting; the anchors' are in docs/log.md.

    docs = ROOT / "docs"
    doc = (docs / "operations.md").read_text() + (docs / "log.md").read_text()
    missing = [name for name in ENV_VARS.values() if f"`{name}`" not in doc]
    assert not missing, missing


