"""The desk's settings and the files it ships (its HTTP side: tests/integration/service)."""

from __future__ import annotations

import pytest

from shotstamp_service.config import Config


def test_thumbnail_settings_come_from_the_environment():
    config = Config.from_env({"SHOTSTAMP_THUMBNAILS": "off", "SHOTSTAMP_THUMBNAIL_SIZE": "128"})
    assert config.thumbnails is False and config.thumbnail_size == 128
    assert Config.from_env({"SHOTSTAMP_THUMBNAILS": "ON"}).thumbnails is True
    assert Config.from_env({}).thumbnails is True
    with pytest.raises(ValueError, match="SHOTSTAMP_THUMBNAILS='maybe' is not on or off"):
        Config.from_env({"SHOTSTAMP_THUMBNAILS": "maybe"})
    with pytest.raises(ValueError, match="thumbnail size must be 16-1024 pixels, got 8"):
        Config.from_env({"SHOTSTAMP_THUMBNAIL_SIZE": "8"})


def test_desk_files_ship_as_package_data():
    # The wheel carries http/static/desk/* (pyproject's package-data); check the
    # pattern covers every file the page route table names.
    import tomllib
    from pathlib import Path

    import shotstamp_service
    from shotstamp_service.http import desk
    from tests.kit import ROOT as root
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["shotstamp_service"]
    package = Path(shotstamp_service.__file__).parent
    shipped = {
        path.relative_to(package).as_posix()
        for pattern in patterns
        for path in package.glob(pattern)
    }
    for name in ["index.html", *desk._ASSETS]:
        assert f"http/static/desk/{name}" in shipped, name
    # and what a dispute file inlines besides the desk's scripts
    for name in ("boot.js", "dispute.css"):
        assert f"http/static/dispute/{name}" in shipped, name


