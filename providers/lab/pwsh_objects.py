"""The base types of the lab's PowerShell: what a script's values, errors and cmdlets are.

:mod:`providers.lab.pwsh_interpreter` runs scripts with them, and the file cmdlets of
:mod:`providers.lab.pwsh_files` are built from them; neither imports the other for them.
"""

from __future__ import annotations

from providers.lab import signatures


class ScriptError(Exception):
    """A terminating error: the pipeline ends Failed with this message."""

    def __init__(self, message, error_id="RuntimeException", exception_type="Management.Automation.RuntimeException"):
        super().__init__(" ".join(str(message).split()))
        self.error_id = error_id
        self.exception_type = exception_type


class PSObj:
    """A PowerShell object: a type name and ordered, case-insensitive properties."""

    def __init__(self, type_name, **properties):
        self.type_name = type_name
        self._props = properties  # a new dict at each call
        self._keys = {name.lower(): name for name in properties}  # lower-case name -> the name shown
        if len(self._keys) != len(properties):
            # Two names differ in case only: the first is kept, with the last value, as setting each in turn would.
            self._props, self._keys = {}, {}
            for name, value in properties.items():
                self[name] = value

    def _key(self, name):
        return self._keys.get(name.lower())

    def has(self, name):
        return name.lower() in self._keys

    def __getitem__(self, name):
        key = self._keys.get(name.lower())
        return None if key is None else self._props[key]

    def __setitem__(self, name, value):
        lower = name.lower()
        key = self._keys.get(lower)
        if key is None:
            key = self._keys[lower] = name
        self._props[key] = value

    def items(self):
        return self._props.items()

    def __str__(self):
        if self.type_name == "System.Management.Automation.PSCustomObject":
            return "@{" + "; ".join(f"{k}={as_text(v)}" for k, v in self._props.items()) + "}"
        return self.type_name


def as_text(value):
    """A value as PowerShell writes it into a string ($null empty, booleans True/False, arrays space-joined)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, list):
        return " ".join(as_text(v) for v in value)
    return str(value)


def as_items(value):
    """A value as the items a pipeline or a parameter's array takes ($null none, a scalar one)."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


class Cmdlet:
    """A cmdlet: its parameters and switches (any other is refused, as PowerShell does), the
    mandatory ones, and ``run(interpreter, named, positional, pipeline_input)``.

    ``reads_only``: it never changes the lab (what it makes lives in the script only), so a
    script of such cmdlets alone leaves the lab file untouched; any other cmdlet, run even in
    part, has the session saved."""

    common = ("OutVariable", "ErrorAction")

    def __init__(self, name, parameters=(), switches=(), mandatory=(), run=None, reads_only=False):
        self.name = name
        self.reads_only = reads_only
        self.names = {p.lower(): p for p in (*parameters, *switches, *self.common)}
        self.switches = {s.lower() for s in switches}
        self.mandatory = [m.lower() for m in mandatory]
        self._run = run

    def parameter(self, given):
        key = given.lower()
        if key in self.names:
            return key
        if key in {p.lower() for p in signatures.parameter_names(self.name)}:
            raise ScriptError(f"The lab's PowerShell does not simulate -{given} of {self.name} (a real parameter).", "NotSupported")
        raise ScriptError(f"A parameter cannot be found that matches parameter name '{given}'.", "NamedParameterNotFound")

    def run(self, interpreter, named, positional, pipeline_input):
        missing = [self.names[m] for m in self.mandatory if m not in named]
        if missing:
            raise ScriptError(
                f"{self.name}: cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
                "MissingMandatoryParameter",
            )
        return self._run(interpreter, named, positional, pipeline_input)


def refuse_positional(name, positional):
    """The lab's cmdlets take named parameters only."""
    if positional:
        raise ScriptError(f"{name}: a positional parameter cannot be found that accepts argument '{as_text(positional[0])}'.", "PositionalParameterNotFound")


def single_value(name, value, kind):
    """The one value of type ``kind`` a parameter was given (an array of one is unwrapped)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ScriptError(f"{name}: cannot convert '{as_text(value)}' to the type the parameter needs.", "ParameterArgumentTransformationError")
    return value
