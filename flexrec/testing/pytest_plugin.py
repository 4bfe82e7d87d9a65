"""flexrec's pytest plug-in: fixtures for testing flexrec and flexrec plug-ins.

pytest loads it wherever flexrec is installed, through the ``pytest11`` entry point ``flexrec``
(``-p no:flexrec`` turns it off). It only defines fixtures, none of them autouse, so it changes
nothing in a test run until a test asks for one. Importing it is cheap: flexrec's components,
torch and transformers are imported inside the fixtures.

- ``flexrec_fresh_plugins``: the test runs with a plug-in manager built from a clean environment.
- ``tiny_llm_path``: a tiny random Llama with its tokenizer, for offline tests of LLM policies.

A plug-in package isolates every test of its suite, as flexrec does, in its pytest configuration::

    [tool.pytest.ini_options]
    usefixtures = ["flexrec_fresh_plugins"]
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["PLUGIN_ENVIRONMENT", "flexrec_fresh_plugins", "tiny_llm_path"]

# Every variable that changes which plug-ins the manager loads or how (see flexrec.plugin.manager).
PLUGIN_ENVIRONMENT = (
    "FLEXREC_PLUGINS",
    "FLEXREC_DISABLED_PLUGINS",
    "FLEXREC_DISABLE_PLUGIN_AUTOLOAD",
    "FLEXREC_TRACE_PLUGINS",
)


@pytest.fixture
def flexrec_fresh_plugins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The test starts and ends with a plug-in manager built from a clean environment.

    The ``FLEXREC_*`` plug-in variables (:data:`PLUGIN_ENVIRONMENT`) are unset for the test and
    the manager is reset before and after it, so plug-ins loaded or disabled by one test never
    leak into the next. The manager itself is still built lazily, on the test's first registry
    access, so a test may set ``FLEXREC_*`` variables (with ``monkeypatch``) before it uses a
    registry.
    """
    from flexrec.plugin.manager import reset_plugin_manager

    for var in PLUGIN_ENVIRONMENT:
        monkeypatch.delenv(var, raising=False)
    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with a locally trained tokenizer, built once per session.

    See :func:`flexrec.testing.tiny_llm.build_tiny_llm`; for example
    ``LLMPolicy(model=str(tiny_llm_path), lora={"r": 4})``.
    """
    from flexrec.testing.tiny_llm import build_tiny_llm

    return build_tiny_llm(tmp_path_factory.mktemp("tiny_llm"))
