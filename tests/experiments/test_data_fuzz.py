"""Fuzzing the IDX and CIFAR pickle parsers: mutated bytes parse or raise DataError, only."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optlab.experiments.data import DataError, cifar, idx

from tests.experiments.data_fixtures import cifar_batch, cifar_pickle, idx_bytes

FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])

IDX_IMAGES = idx_bytes(np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4))
IDX_GZ = gzip.compress(IDX_IMAGES, mtime=0)
CIFAR_PICKLE = cifar_pickle(cifar_batch(2, 0))


@st.composite
def mutated(draw, original: bytes):
    """``original`` with some bytes overwritten, then possibly cut short or extended."""
    data = bytearray(original)
    last = len(data) - 1
    # The structure (headers, opcodes, lengths) sits near the ends: aim there more often.
    near_start, near_end = st.integers(0, min(64, last)), st.integers(max(0, last - 256), last)
    positions = st.one_of(near_start, near_end, st.integers(0, last))
    for _ in range(draw(st.integers(0, 8))):
        data[draw(positions)] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    tail = draw(st.binary(max_size=16))
    return bytes(data[:cut]) + tail if draw(st.booleans()) else bytes(data)


def _parses_or_data_error(parse, raw):
    try:
        result = parse(raw)
    except DataError as err:
        assert str(err)  # every error explains itself
        return None
    return result


@FUZZ
@given(mutated(IDX_IMAGES))
def test_idx_parser_on_mutated_bytes(raw):
    array = _parses_or_data_error(lambda r: idx.parse_idx(r, source="fuzz"), raw)
    if array is not None:  # a parse is consistent with the bytes it came from
        assert array.nbytes == len(raw) - 4 - 4 * raw[3]


@FUZZ
@given(st.binary(max_size=64))
def test_idx_parser_on_random_headers(raw):
    _parses_or_data_error(lambda r: idx.parse_idx(r, source="fuzz", magic=idx.IMAGES_MAGIC), raw)


@FUZZ
@given(mutated(IDX_GZ))
def test_gzipped_idx_on_mutated_bytes(raw):
    _parses_or_data_error(lambda r: idx.parse_idx(idx.gunzip(r, source="fuzz"), source="f"), raw)


# A mutated string opcode can hold an escape Python deprecates; pickletools warns as it reads it.
@pytest.mark.filterwarnings("ignore:invalid escape sequence:DeprecationWarning")
@FUZZ
@given(mutated(CIFAR_PICKLE))
def test_cifar_parser_on_mutated_pickles(raw):
    batch = _parses_or_data_error(lambda r: cifar.parse_batch(r, source="fuzz"), raw)
    if batch is not None:
        images, labels = batch
        assert images.shape[1:] == (32, 32, 3) and len(images) == len(labels)
        assert labels.min() >= 0 and labels.max() <= 9


@FUZZ
@given(st.binary(max_size=256))
def test_cifar_parser_on_random_bytes(raw):
    _parses_or_data_error(lambda r: cifar.parse_batch(r, source="fuzz"), raw)
