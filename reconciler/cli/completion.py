"""``syncprep completion bash|powershell``: a completion script generated from syncprep's own
parser (every verb, option and choice it has; nothing written by hand per verb)."""

from __future__ import annotations

import argparse
import re

from reconciler.cli.options import EXIT_OK, verb_parser

NAME = "completion"
SHELLS = ("bash", "powershell")
#: Metavars of options whose value is a path: completed as files.
PATH_METAVARS = frozenset({"FILE", "OUT", "PLANFILE", "PEM", "DESIRED"})
_SAFE = re.compile(r"^[A-Za-z0-9_.:+-]+$")


def add_parser(commands, parents):
    parser = verb_parser(
        commands,
        NAME,
        parents=[parents.common],
        help="print a shell completion script (bash or PowerShell)",
        description="Print a completion script for SHELL. bash: source <(syncprep completion bash). "
        "PowerShell: syncprep completion powershell | Out-String | Invoke-Expression (add it to $PROFILE to keep it).",
        exits={0: "the script was printed", 1: "error"},
    )
    parser.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash or powershell")
    return parser


def run(args, out, err):
    # The whole parser, which main hands to every verb (completion is one of its verbs).
    tree = command_tree(args.whole_parser)
    out.file.write(bash_script(tree) if args.shell == "bash" else powershell_script(tree))
    return EXIT_OK


def command_tree(parser, path=""):
    """``{path: (words, options, {option: choices, or None for a path, or () for free text})}``
    for every command path ("", "plan", "lab", "lab sync", ...); ``words`` are its subcommands
    and the choices of its positionals."""
    tree, commands, options, values = {}, [], [], {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands.append(name)
                tree.update(command_tree(sub, f"{path} {name}".strip()))
        elif not action.option_strings and action.choices:
            commands.extend(str(c) for c in action.choices)  # a positional's choices ("completion bash")
        elif action.option_strings and action.help != argparse.SUPPRESS:
            options.extend(action.option_strings)
            if action.nargs != 0:
                kind = tuple(str(c) for c in action.choices) if action.choices else (None if action.metavar in PATH_METAVARS else ())
                values.update((option, kind) for option in action.option_strings)
    words = [path, *commands, *options] + [c for kind in values.values() if kind for c in kind]
    unsafe = [w for w in words if w and not all(_SAFE.match(part) for part in w.split(" "))]
    if unsafe:
        raise ValueError(f"not completable safely: {unsafe}")  # our own parser's names: never
    tree[path] = (commands, sorted(set(options)), values)
    return tree


def bash_script(tree):
    steps = " | ".join(f'"{path}|{command}"' for path, (commands, _o, _v) in tree.items() for command in commands if f"{path} {command}".strip() in tree)
    value_cases, word_cases, command_cases = [], [], []
    for path, (commands, options, values) in sorted(tree.items()):
        for option, kind in sorted(values.items()):
            reply = f'$(compgen -W "{" ".join(kind)}" -- "$cur")' if kind else ('$(compgen -f -- "$cur")' if kind is None else "")
            value_cases.append(f'        "{path}|{option}") COMPREPLY=({reply}); return ;;')
        word_cases.append(f'        "{path}") options="{" ".join(options)}"; commands="{" ".join(commands)}" ;;')
    return "\n".join(
        [
            "# bash completion for syncprep, generated from its own command line by 'syncprep completion bash'.",
            "# Load it with:  source <(syncprep completion bash)",
            "_syncprep() {",
            '    local cur=${COMP_WORDS[COMP_CWORD]} prev="" path="" word i options="" commands=""',
            "    ((COMP_CWORD > 1)) && prev=${COMP_WORDS[COMP_CWORD-1]}",
            "    for ((i = 1; i < COMP_CWORD; i++)); do",
            "        word=${COMP_WORDS[i]}",
            '        case "$path|$word" in',
            f"            {steps}) path=${{path:+$path }}$word ;;",
            "        esac",
            "    done",
            '    case "$path|$prev" in',
            *value_cases,
            "    esac",
            '    case "$path" in',
            *word_cases,
            "    esac",
            "    if [[ $cur == -* ]]; then",
            '        COMPREPLY=($(compgen -W "$options" -- "$cur"))',
            '    elif [[ -n $commands ]]; then',
            '        COMPREPLY=($(compgen -W "$commands" -- "$cur"))',
            "    else",
            '        COMPREPLY=($(compgen -f -- "$cur"))',
            "    fi",
            "}",
            "complete -o filenames -F _syncprep syncprep",
            "",
        ]
    )


def _ps_list(words):
    return "@(" + ", ".join(f"'{w}'" for w in words) + ")"


def powershell_script(tree):
    commands = [f"        '{path}' = {_ps_list(c)}" for path, (c, _o, _v) in sorted(tree.items()) if c]
    options = [f"        '{path}' = {_ps_list(o)}" for path, (_c, o, _v) in sorted(tree.items())]
    values, files = [], []
    for path, (_c, _o, kinds) in sorted(tree.items()):
        for option, kind in sorted(kinds.items()):
            key = f"{path} {option}".strip()
            if kind:
                values.append(f"        '{key}' = {_ps_list(kind)}")
            else:
                files.append(key)  # a path (PowerShell completes it) or free text: nothing to offer
    return "\n".join(
        [
            "# PowerShell completion for syncprep, generated from its own command line by 'syncprep completion powershell'.",
            "# Load it with:  syncprep completion powershell | Out-String | Invoke-Expression   (add that line to $PROFILE to keep it)",
            "Register-ArgumentCompleter -Native -CommandName syncprep, syncprep.exe -ScriptBlock {",
            "    param($wordToComplete, $commandAst, $cursorPosition)",
            "    $commands = @{",
            *commands,
            "    }",
            "    $options = @{",
            *options,
            "    }",
            "    $values = @{",
            *values,
            "    }",
            f"    $valueless = {_ps_list(files)}",
            "    $path = ''",
            "    $previous = ''",
            "    $elements = @($commandAst.CommandElements | Select-Object -Skip 1 | Where-Object { $_.Extent.EndOffset -lt $cursorPosition })",
            "    foreach ($element in $elements) {",
            "        $word = $element.ToString()",
            "        if ($commands.ContainsKey($path) -and $commands[$path] -ccontains $word -and $options.ContainsKey(\"$path $word\".Trim())) { $path = \"$path $word\".Trim() }",
            "        $previous = $word",
            "    }",
            "    $key = \"$path $previous\".Trim()",
            "    if ($values.ContainsKey($key)) { $candidates = $values[$key] }",
            "    elseif ($valueless -ccontains $key) { return }",
            "    elseif ($wordToComplete -like '-*') { $candidates = $options[$path] }",
            "    elseif ($commands.ContainsKey($path)) { $candidates = $commands[$path] }",
            "    else { return }",
            "    $candidates | Where-Object { $_ -like \"$wordToComplete*\" } | ForEach-Object {",
            "        [System.Management.Automation.CompletionResult]::new($_, $_, 'ParameterValue', $_)",
            "    }",
            "}",
            "",
        ]
    )
