"""The upload reader's part names: memoised, and the same as aiohttp's own parse."""

from __future__ import annotations

import warnings

import pytest
from aiohttp import BodyPartReader
from multidict import CIMultiDict, CIMultiDictProxy

from shotstamp_service.http import routes

# Ordinary, quoted, escaped, RFC 5987, odd and broken Content-Disposition headers.
HEADERS = [
    'form-data; name="image"; filename="kettle.jpg"',
    'form-data; name="title"',
    "form-data; name=title",
    'form-data; name="ima\\"ge"',
    "form-data; name*=utf-8''%C3%BC",
    'form-data; name="a;b"',
    'form-data; filename="x.jpg"',
    "form-data; name=",
    "form-data; name",
    "form-data;; name=\"image\"",
    'form-data; name="image"; name="title"',
    "",
    '"form-data"; name="image"',
    'form-data; name="colour"',
]


def _aiohttp_name(header: str | None) -> str | None:
    headers = CIMultiDict() if header is None else CIMultiDict({"Content-Disposition": header})
    part = BodyPartReader(b"--x", CIMultiDictProxy(headers), None)  # type: ignore[arg-type]
    return part.name


@pytest.mark.parametrize("header", [*HEADERS, None])
def test_a_part_name_is_aiohttps_own(header: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aiohttp warns about the broken ones
        expected = _aiohttp_name(header)
        routes._disposition_name.cache_clear()
        first, again = routes._disposition_name(header), routes._disposition_name(header)
    assert first == again == expected


def test_the_upload_reader_reads_names_through_the_memo() -> None:
    routes._disposition_name.cache_clear()
    headers = CIMultiDictProxy(CIMultiDict({"Content-Disposition": HEADERS[0]}))
    part = routes._UploadPart(b"--x", headers, None)  # type: ignore[arg-type]
    assert routes._UploadReader.part_reader_cls is routes._UploadPart
    assert (part.name, part.name) == ("image", "image")
    info = routes._disposition_name.cache_info()
    assert (info.misses, info.hits) == (1, 1)
