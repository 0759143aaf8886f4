"""Tables that outlive one batch: the syscall name table of joined blocks, and the syscall names validation
remembers as good."""

from __future__ import annotations

import numpy as np
from baseliner.models.block import NameTable, VectorBlock
from baseliner.models.rate_features import block_counts
from baseliner.models.validate import validate_block
from baseliner.models.vector import FeatureVector, Identity


def _block(container: str, syscalls: list[dict[str, float]]) -> VectorBlock:
    return VectorBlock.from_vectors([
        FeatureVector(Identity("node-1", container, "nginx", "1"), 1.7e9 + 10 * k, 10.0, calls)
        for k, calls in enumerate(syscalls)
    ])


def _blocks() -> list[VectorBlock]:
    return [
        _block("c1", [{"read": 5, "write": 2}, {"write": 1, "futex": 7}]),
        _block("c2", [{"futex": 3, "membarrier": 1}, {}]),
        _block("c3", [{"read": 4, "openat": 9, "read_custom": 2}]),
    ]


def test_blocks_joined_through_a_name_table_have_the_same_windows_and_share_its_list() -> None:
    table = NameTable()
    plain = VectorBlock.concat(_blocks())
    expected = block_counts(plain)
    two = VectorBlock.concat(_blocks()[:2], table)
    np.testing.assert_array_equal(block_counts(two), expected[:4])
    coded = VectorBlock.concat(_blocks(), table)  # the table grows (its feature columns with it)
    assert coded.syscall_names is table.names
    assert [coded.row_syscalls(i) for i in range(len(coded))] == [plain.row_syscalls(i) for i in range(len(plain))]
    np.testing.assert_array_equal(block_counts(coded), expected)
    again = VectorBlock.concat(list(reversed(_blocks())), table)  # other batches, other order: the same list
    assert again.syscall_names is table.names and len(table.names) == 6
    assert again.row_syscalls(0) == {"read": 4.0, "openat": 9.0, "read_custom": 2.0}
    np.testing.assert_array_equal(block_counts(again), block_counts(VectorBlock.concat(list(reversed(_blocks())))))


def test_a_full_name_table_starts_over_and_joined_blocks_stay_whole() -> None:
    table = NameTable(limit=5)
    first = VectorBlock.concat(_blocks()[:2], table)  # read, write, futex, membarrier
    old = table.names
    b1, b2, b3 = _blocks()
    joined = VectorBlock.concat([b3, b2], table)  # 2 new names: past the limit while coding: a new list
    assert table.names is not old and joined.syscall_names is table.names and len(table.names) == 5
    assert first.syscall_names is old and first.row_syscalls(1) == {"write": 1.0, "futex": 7.0}
    assert [joined.row_syscalls(i) for i in range(3)] == [b3.row_syscalls(0), b2.row_syscalls(0), {}]
    # a call with more names than the table holds: the blocks' names are joined instead
    wide = VectorBlock.concat(_blocks(), table)
    plain = VectorBlock.concat(_blocks())
    assert wide.syscall_names is not table.names and wide.syscall_names == plain.syscall_names
    assert [wide.row_syscalls(i) for i in range(len(wide))] == [plain.row_syscalls(i) for i in range(len(plain))]


def test_a_bad_syscall_name_no_window_uses_is_not_remembered_as_good() -> None:
    """A batch may list names no window of it uses: a bad one among them must still refuse the window of a
    later batch that uses it (validation remembers only the names that passed)."""
    listed = _block("c1", [{"read": 5}])
    listed.syscall_names.append("")  # listed, unused
    ok, errors = validate_block(listed)
    assert ok.all() and not errors
    uses = _block("c2", [{"read": 5, "": 3}, {"read": 1}])
    ok, errors = validate_block(uses)
    assert ok.tolist() == [False, True] and errors[0].reason == "BAD_REFERENCE"
