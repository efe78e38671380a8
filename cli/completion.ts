/**
 * Shell completion scripts for bash, zsh and fish (`nfqlb completion SHELL`),
 * printed from the command registry: the command names, each command's
 * options (ours too), the values of options with a fixed set (`choices`),
 * file names for options whose value is a FILE, and the command names after
 * `nfqlb help`. Nothing here is written by hand per command, so a new option
 * is completed as soon as it is in its command's table.
 */
import type { Command } from "./command.ts";
import type { OptionSpec } from "./getopt.ts";
import { argName } from "./help.ts";

/** The shells we print a script for. */
export const SHELLS = ["bash", "zsh", "fish"] as const;
/** One of {@link SHELLS}. */
export type Shell = typeof SHELLS[number];

/** What completes an option's value: a fixed set of words, file names, or nothing to offer. */
function valueKind(o: OptionSpec): readonly string[] | "file" | undefined {
  if (o.flag) return undefined;
  if (o.choices) return o.choices;
  return /FILE/.test(argName(o)) ? "file" : undefined;
}

/** The words a command takes as operands (`help`: the command names; `completion`: the shells). */
function operands(cmd: Command, commands: readonly Command[]): readonly string[] {
  if (cmd.name === "help") return commands.map((c) => c.name);
  if (cmd.name === "completion") return SHELLS;
  return [];
}

/** A command's one-line summary: the first indented line of its header. */
export function summary(cmd: Command): string {
  return (cmd.header.split("\n").find((l) => l.startsWith("  ")) ?? "").trim();
}

/** An option's help on one line. */
const oneLine = (s: string) => s.replace(/\s*\n\s*/g, " ").trim();

/** A shell word in single quotes. */
const sq = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

function bash(commands: readonly Command[]): string {
  const names = commands.map((c) => c.name).join(" ");
  const optCases = commands.map((c) => {
    const words = c.options.map((o) => (o.flag || o.optional ? `--${o.name}` : `--${o.name}=`)).join(" ");
    return `    ${c.name}) echo ${sq(words)} ;;`;
  });
  const valueCases: string[] = [];
  for (const c of commands) {
    for (const o of c.options) {
      const kind = valueKind(o);
      if (kind === undefined) continue;
      valueCases.push(
        `    ${sq(`${c.name}:${o.name}`)}) echo ${sq(kind === "file" ? "@file" : kind.join(" "))} ;;`,
      );
    }
  }
  const operandCases = commands.filter((c) => operands(c, commands).length > 0)
    .map((c) => `    ${c.name}) echo ${sq(operands(c, commands).join(" "))} ;;`);
  return `# bash completion for nfqlb, printed by \`nfqlb completion bash\` from its command registry.
# Load it with: source <(nfqlb completion bash)

# The options of command $1: value options end with '='.
_nfqlb_options() {
  case "$1" in
${optCases.join("\n")}
  esac
}

# The values of option $2 of command $1: words, or @file for file names.
_nfqlb_values() {
  case "$1:$2" in
${valueCases.join("\n")}
  esac
}

# The operands of command $1.
_nfqlb_operands() {
  case "$1" in
${operandCases.join("\n")}
  esac
}

# The full name of option $2 (as typed, dashes and all) of command $1: exact, or a unique prefix.
_nfqlb_option_name() {
  local n="\${2#-}" o found=""
  n="\${n#-}"
  for o in $(_nfqlb_options "$1"); do
    o="\${o#--}"
    o="\${o%=}"
    [[ "$o" == "$n" ]] && { echo "$o"; return 0; }
    [[ -n "$n" && "$o" == "$n"* ]] && found="$found $o"
  done
  # shellcheck disable=SC2086
  set -- $found
  [[ $# -eq 1 ]] && echo "$1"
}

# Whether option $2 (full name) of command $1 takes a value.
_nfqlb_takes_value() {
  [[ " $(_nfqlb_options "$1") " == *" --$2= "* ]]
}

_nfqlb() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" prev="" opt="" pre="" name vals
  COMPREPLY=()
  [[ $COMP_CWORD -ge 1 ]] && prev="\${COMP_WORDS[COMP_CWORD-1]}"
  if [[ $COMP_CWORD -le 1 ]]; then
    mapfile -t COMPREPLY < <(compgen -W "${names} --help --version" -- "$cur")
    return 0
  fi
  local cmd="\${COMP_WORDS[1]}"
  # a value: --opt=v (split at '=' by COMP_WORDBREAKS, or not), or --opt v
  if [[ "$cur" == "=" ]]; then
    opt="$prev"
    cur=""
  elif [[ "$prev" == "=" && $COMP_CWORD -ge 3 ]]; then
    opt="\${COMP_WORDS[COMP_CWORD-2]}"
  elif [[ "$cur" == -*=* ]]; then
    opt="\${cur%%=*}"
    pre="$opt="
    cur="\${cur#*=}"
  elif [[ "$prev" == -* && "$prev" != *=* ]]; then
    name="$(_nfqlb_option_name "$cmd" "$prev")"
    [[ -n "$name" ]] && _nfqlb_takes_value "$cmd" "$name" && opt="$prev"
  fi
  if [[ -n "$opt" ]]; then
    name="$(_nfqlb_option_name "$cmd" "$opt")"
    [[ -n "$name" ]] || return 0
    vals="$(_nfqlb_values "$cmd" "$name")"
    if [[ "$vals" == "@file" ]]; then
      mapfile -t COMPREPLY < <(compgen -f -- "$cur")
    elif [[ -n "$vals" ]]; then
      mapfile -t COMPREPLY < <(compgen -W "$vals" -- "$cur")
    fi
    [[ -n "$pre" && \${#COMPREPLY[@]} -gt 0 ]] && COMPREPLY=("\${COMPREPLY[@]/#/$pre}")
    return 0
  fi
  if [[ "$cur" == -* ]]; then
    mapfile -t COMPREPLY < <(compgen -W "--help $(_nfqlb_options "$cmd")" -- "$cur")
    # a value option completes to '--opt=': no space after it
    [[ \${#COMPREPLY[@]} -eq 1 && "\${COMPREPLY[0]}" == *= ]] && compopt -o nospace 2>/dev/null
    return 0
  fi
  vals="$(_nfqlb_operands "$cmd")"
  [[ -n "$vals" ]] && mapfile -t COMPREPLY < <(compgen -W "$vals" -- "$cur")
  return 0
}

complete -F _nfqlb nfqlb
`;
}

/** A zsh _arguments spec: brackets and colons in texts escaped. */
const zq = (s: string) => s.replace(/([[\]:\\])/g, "\\$1");

function zsh(commands: readonly Command[]): string {
  const described = commands.map((c) => `    ${sq(`${zq(c.name)}:${zq(summary(c))}`)}`).join("\n");
  const cases = commands.map((c) => {
    const specs = c.options.map((o) => {
      const desc = `[${zq(oneLine(o.help))}]`;
      if (o.flag) return sq(`--${o.name}${desc}`);
      const kind = valueKind(o);
      const action = kind === "file" ? "_files" : kind ? `(${kind.join(" ")})` : " ";
      return sq(`--${o.name}${o.optional ? "=-" : "="}${desc}:${zq(argName(o))}:${action}`);
    });
    const ops = operands(c, commands);
    if (ops.length > 0) specs.push(sq(`1:operand:(${ops.join(" ")})`));
    return `    ${c.name})\n      _arguments -S ${
      [sq("--help[Print the help]"), ...specs].join(" \\\n        ")
    } ;;`;
  });
  return `#compdef nfqlb
# zsh completion for nfqlb, printed by \`nfqlb completion zsh\` from its command registry.
# Install it as _nfqlb in a directory of $fpath, or load it with: source <(nfqlb completion zsh)

_nfqlb() {
  local -a commands
  commands=(
${described}
  )
  if (( CURRENT == 2 )); then
    _describe -t commands 'nfqlb command' commands
    return
  fi
  local cmd="\${words[2]}"
  shift words
  (( CURRENT-- ))
  case "$cmd" in
${cases.join("\n")}
  esac
}

if [[ "\${zsh_eval_context[-1]}" == loadautofunc ]]; then
  _nfqlb "$@"
else
  compdef _nfqlb nfqlb
fi
`;
}

function fish(commands: readonly Command[]): string {
  const lines = [
    "# fish completion for nfqlb, printed by `nfqlb completion fish` from its command registry.",
    "# Install it as nfqlb.fish in ~/.config/fish/completions, or load it with: nfqlb completion fish | source",
    "",
    "complete -c nfqlb -f",
    `complete -c nfqlb -n __fish_use_subcommand -l help -d ${sq("Print the commands")}`,
    `complete -c nfqlb -n __fish_use_subcommand -l version -d ${sq("Print which build this is")}`,
  ];
  for (const c of commands) {
    lines.push(`complete -c nfqlb -n __fish_use_subcommand -a ${sq(c.name)} -d ${sq(summary(c))}`);
  }
  for (const c of commands) {
    const when = `-n ${sq(`__fish_seen_subcommand_from ${c.name}`)}`;
    lines.push(`complete -c nfqlb ${when} -l help -d ${sq("Print the help")}`);
    for (const o of c.options) {
      const kind = valueKind(o);
      // fish has no optional values: `--watch` alone is offered, as a flag
      const value = o.flag || o.optional
        ? ""
        : kind === "file"
        ? " -r -F"
        : kind
        ? ` -x -a ${sq(kind.join(" "))}`
        : " -x";
      lines.push(`complete -c nfqlb ${when} -l ${sq(o.name)}${value} -d ${sq(oneLine(o.help))}`);
    }
    const ops = operands(c, commands);
    if (ops.length > 0) lines.push(`complete -c nfqlb ${when} -a ${sq(ops.join(" "))}`);
  }
  return lines.join("\n") + "\n";
}

/** The completion script for `shell`, from `commands` (the registry). */
export function completionScript(shell: Shell, commands: readonly Command[]): string {
  return shell === "bash" ? bash(commands) : shell === "zsh" ? zsh(commands) : fish(commands);
}
