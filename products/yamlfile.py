"""YAML as operators write it: manifests and policy files.

PyYAML implements YAML 1.1, where ``1.0e8`` (no sign in the exponent) is a *string*;
YAML 1.2 and every JSON-minded reader take it as a number, and DESIGN §5's own
example manifest writes bounds that way. This loader resolves YAML 1.2 floats.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from products.errors import InvalidRequest


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader whose float resolver follows YAML 1.2 (``1e8``, ``1.0e8``)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str, what: str = "file") -> Any:
    """Parse YAML text with YAML 1.2 numbers. Raises ``InvalidRequest`` naming ``what``."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        raise InvalidRequest(f"{what} is not valid YAML: {str(exc).splitlines()[0]}") from None
