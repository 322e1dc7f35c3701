"""CloudFormation intrinsic functions, resolved as CloudFormation would at create time.

Ref, Fn::GetAtt, Fn::Join, Fn::Sub (both forms), Fn::Select, Fn::Split, Fn::GetAZs and the
pseudo parameters; anything else is refused by name, never passed through unresolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

PSEUDO = ("AWS::AccountId", "AWS::Region", "AWS::Partition", "AWS::URLSuffix", "AWS::StackName")
_SUB_VARIABLE = re.compile(r"\$\{([^}!][^}]*)\}")


class TemplateError(ValueError):
    """The template uses something the local deployer cannot resolve or create."""


def references(value: Any) -> set[str]:
    """Logical ids a value depends on (Ref, GetAtt, and ${...} in Fn::Sub)."""
    found: set[str] = set()
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref" and isinstance(arg, str) and not arg.startswith("AWS::"):
                found.add(arg)
            elif key == "Fn::GetAtt":
                found.add(arg[0] if isinstance(arg, list) else arg.split(".", 1)[0])
            elif key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                local = set(arg[1]) if isinstance(arg, list) and len(arg) > 1 else set()
                for name in _SUB_VARIABLE.findall(text):
                    base = name.split(".", 1)[0]
                    if base not in local and not base.startswith("AWS::"):
                        found.add(base)
        for item in value.values():
            found |= references(item)
    elif isinstance(value, list):
        for item in value:
            found |= references(item)
    return found


class Resolver:
    """Resolves a template value against what is deployed so far.

    ``ref(logical_id)`` and ``get_att(logical_id, attribute)`` come from the deployer (the
    resources it created, and the parameters).
    """

    def __init__(
        self,
        *,
        pseudo: Mapping[str, str],
        ref: Callable[[str], Any],
        get_att: Callable[[str, str], Any],
    ) -> None:
        self.pseudo = dict(pseudo)
        self._ref = ref
        self._get_att = get_att

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key.startswith("Fn::") or key == "Condition":
                return self._function(key, arg)
        return {k: self(v) for k, v in value.items()}

    def ref(self, name: str) -> Any:
        if name in self.pseudo:
            return self.pseudo[name]
        if name.startswith("AWS::"):
            raise TemplateError(f"pseudo parameter {name} is not supported locally")
        return self._ref(name)

    def _function(self, key: str, arg: Any) -> Any:
        if key == "Fn::GetAtt":
            logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
            return self._get_att(logical_id, self(attribute))
        if key == "Fn::Join":
            delimiter, items = arg
            return str(delimiter).join(str(self(item)) for item in self(items))
        if key == "Fn::Select":
            index, items = arg
            return self(items)[int(self(index))]
        if key == "Fn::Split":
            delimiter, text = arg
            return str(self(text)).split(delimiter)
        if key == "Fn::Sub":
            text, local = (arg, {}) if isinstance(arg, str) else (arg[0], self(arg[1]))
            return self._sub(text, local)
        if key == "Fn::GetAZs":
            region = self(arg) or self.pseudo["AWS::Region"]
            return [f"{region}{zone}" for zone in "abc"]
        raise TemplateError(f"intrinsic function {key} is not supported by the local deployer")

    def _sub(self, text: str, local: Mapping[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in local:
                return str(local[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return str(self._get_att(logical_id, attribute))
            return str(self.ref(name))

        # ${!Literal} stays as ${Literal}
        return _SUB_VARIABLE.sub(replace, text).replace("${!", "${")
