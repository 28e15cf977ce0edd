"""Every public method of the SDK's databases, storage, services,
runtime_env, projects and volumes resources is called somewhere in this
suite (issue 15). Runs last (file order), and only judges a whole-suite
run: a run of a few files calls only their methods."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SDK_CALLS, sdk_public_methods


def test_every_sdk_method_of_the_data_resources_is_called(request):
    here = Path(__file__).parent
    every_file = {p.name for p in here.glob("test_*.py")}
    collected = {Path(str(item.fspath)).name for item in request.session.items}
    if collected != every_file:
        pytest.skip(f"a partial run ({len(collected)} of {len(every_file)} files)")
    wanted = {f"{r}.{m}" for r, methods in sdk_public_methods().items() for m in methods}
    missed = sorted(wanted - SDK_CALLS)
    print(f"{len(wanted) - len(missed)} of {len(wanted)} SDK methods called")
    assert not missed, f"never called: {missed}"
