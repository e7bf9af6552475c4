/**
 * Flag tables and what is built from them. Each command describes its flags
 * once, in a table keyed by the field of the command's options each flag
 * fills; the same table drives node:util.parseArgs, the defaults, the
 * validation, the command's --help and, for `weir run`, the keys a --config
 * file may hold.
 */
import { parseArgs } from 'node:util';

/** A mistake in how weir was invoked: the CLI exits 2 and points at --help. */
export class UsageError extends Error {}

/**
 * How a flag is written:
 * - value: `--flag VALUE` or `--flag=VALUE`;
 * - bool: like value, with true/false/1/0, and `--flag` alone meaning true;
 * - switch: `--flag` alone, no value (its text is "true" when given, else "false").
 */
export type FlagKind = 'value' | 'bool' | 'switch';

export interface Flag<T> {
  /** The name after `--`. */
  readonly flag: string;
  /** A one-letter alias, written `-x`. */
  readonly short?: string;
  /** Its key in a --config file; absent: the command line only. */
  readonly yaml?: string;
  readonly kind: FlagKind;
  /** What help shows after the flag name, e.g. CIDRS or tcp|udp. */
  readonly placeholder?: string;
  /**
   * The text used when neither the command line nor a file gives one,
   * validated like a given one. A function for defaults read from the
   * environment. Absent: the empty text (or, for a switch, "false").
   */
  readonly default?: string | (() => string);
  /** How help describes the default when it is a function or empty. */
  readonly defaultHelp?: string;
  /** The command fails without it. */
  readonly required?: boolean;
  /** One line for help. */
  readonly description: string;
  /** Validates the text and builds the value; errors are UsageErrors naming the flag. */
  readonly parse: (flag: string, text: string) => T;
}

/** One flag for each field of a command's options R. */
export type FlagTable<R> = { readonly [K in keyof R]: Flag<R[K]> };

/** Flag texts as given, by field; a missing field takes its flag's default. */
export type Given<R> = { [K in keyof R]?: string };

export interface Command<R> {
  readonly name: string;
  /** One line for `weir --help`. */
  readonly summary: string;
  /** Paragraphs under the usage line of the command's help. */
  readonly notes?: readonly string[];
  readonly flags: FlagTable<R>;
}

/** Every command takes --help (and -h). */
export const HELP_FLAG: Flag<boolean> = {
  flag: 'help',
  short: 'h',
  kind: 'switch',
  description: 'print this help and exit',
  parse: present,
};

/** The table's entries in table order, typed by field. */
export function flagEntries<R>(table: FlagTable<R>): Array<[keyof R & string, Flag<R[keyof R & string]>]> {
  return Object.entries(table) as Array<[keyof R & string, Flag<R[keyof R & string]>]>;
}

type ParseArgsOptions = Record<string, { type: 'string' | 'boolean'; short?: string }>;

function parseArgsOptions<R>(table: FlagTable<R>): ParseArgsOptions {
  const options: ParseArgsOptions = {};
  for (const f of [...flagEntries(table).map(([, f]) => f), HELP_FLAG]) {
    options[f.flag] = { type: f.kind === 'switch' ? 'boolean' : 'string', ...(f.short === undefined ? {} : { short: f.short }) };
  }
  return options;
}

/**
 * parseArgs has no flag whose value is optional: a bool flag standing alone
 * (at the end, or before another flag) is given as `--flag=true`.
 */
function withBareBools(argv: readonly string[], boolFlags: ReadonlySet<string>): string[] {
  return argv.map((arg, i) => {
    const next = argv[i + 1];
    const bare = arg.startsWith('--') && boolFlags.has(arg.slice(2));
    return bare && (next === undefined || next.startsWith('-')) ? `${arg}=true` : arg;
  });
}

/** A parseArgs error in weir's words, naming the flag: the first argument parseArgs rejects. */
function usageErrorFor(error: unknown, args: string[], options: ParseArgsOptions): UsageError {
  const { tokens } = parseArgs({ args, options, strict: false, tokens: true });
  for (const t of tokens) {
    if (t.kind === 'positional') return new UsageError(`unexpected argument ${JSON.stringify(t.value)}`);
    if (t.kind !== 'option') continue;
    const option = Object.hasOwn(options, t.name) ? options[t.name] : undefined;
    if (!option) return new UsageError(`unknown flag ${t.rawName}`);
    if (option.type === 'boolean' && t.value !== undefined) return new UsageError(`${t.rawName}: takes no value, got ${JSON.stringify(t.value)}`);
    if (option.type === 'string' && t.value === undefined) return new UsageError(`${t.rawName}: missing its value`);
    if (option.type === 'string' && !t.inlineValue && t.value?.startsWith('-')) {
      return new UsageError(`${t.rawName}: missing its value (a value starting with "-" is written ${t.rawName}=VALUE)`);
    }
  }
  return new UsageError(error instanceof Error ? error.message : String(error));
}

export interface Args<R> {
  /** --help or -h was given: the caller prints the help instead of running. */
  readonly help: boolean;
  readonly given: Given<R>;
}

/**
 * The command line of one command, checked against its table: unknown flags,
 * missing values and stray arguments are UsageErrors. Values are not
 * validated yet (resolveFlags does that), so --help works whatever values
 * are on the line.
 */
export function readArgs<R>(command: Command<R>, argv: readonly string[]): Args<R> {
  const options = parseArgsOptions(command.flags);
  const boolFlags = new Set(flagEntries(command.flags).flatMap(([, f]) => (f.kind === 'bool' ? [f.flag] : [])));
  const args = withBareBools(argv, boolFlags);
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ args, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw usageErrorFor(e, args, options);
  }
  const given: Given<R> = {};
  for (const [key, f] of flagEntries(command.flags)) {
    const v = values[f.flag];
    if (v !== undefined) given[key] = String(v);
  }
  return { help: values[HELP_FLAG.flag] === true, given };
}

function defaultText<T>(f: Flag<T>): string {
  if (typeof f.default === 'function') return f.default();
  return f.default ?? (f.kind === 'switch' ? 'false' : '');
}

/** The command's options: each field from its given text, else its flag's default, validated by the flag's parse. */
export function resolveFlags<R>(table: FlagTable<R>, given: Given<R>): R {
  const out: Partial<R> = {};
  for (const [key, f] of flagEntries(table)) {
    const text = given[key];
    if (text === undefined && f.required) throw new UsageError(`--${f.flag} is required`);
    out[key] = f.parse(f.flag, text ?? defaultText(f));
  }
  return out as R;
}

function flagLabel<T>(f: Flag<T>): string {
  const name = f.short === undefined ? `--${f.flag}` : `-${f.short}, --${f.flag}`;
  return f.placeholder === undefined ? name : `${name} ${f.placeholder}`;
}

/**
 * What help says after a flag's description: "(required)", or its default:
 * defaultHelp, else a fixed non-empty default, else "off" for a switch and
 * "none" for a value left empty. --help alone has none.
 */
function defaultDescription<T>(f: Flag<T>): string | undefined {
  if (f.required) return 'required';
  if (f.defaultHelp !== undefined) return `default: ${f.defaultHelp}`;
  if (typeof f.default === 'string' && f.default !== '') return `default: ${f.default}`;
  if (f === HELP_FLAG) return undefined;
  return f.kind === 'switch' ? 'default: off' : 'default: none';
}

/** `weir NAME --src IP[:PORT] [flags]`: the required flags, then the rest. */
function usageLine<R>(command: Command<R>): string {
  const required = flagEntries(command.flags).flatMap(([, f]) => (f.required ? [flagLabel(f)] : []));
  return ['usage: weir', command.name, ...required, '[flags]'].join(' ');
}

/** The command's --help: usage line, notes, then one line per flag with its value, description and default. */
export function formatHelp<R>(command: Command<R>): string {
  const flags: Array<Flag<unknown>> = [...flagEntries(command.flags).map(([, f]) => f), HELP_FLAG];
  const width = Math.max(...flags.map((f) => flagLabel(f).length));
  const lines = flags.map((f) => {
    const def = defaultDescription(f);
    return `  ${flagLabel(f).padEnd(width)}  ${f.description}${def === undefined ? '' : ` (${def})`}`;
  });
  const notes = (command.notes ?? []).map((n) => `${n}\n\n`).join('');
  return `${usageLine(command)}\n\n${command.summary}\n\n${notes}flags:\n${lines.join('\n')}\n`;
}

/** A command of any options type, for lists of commands. */
export type AnyCommand = Command<Record<string, unknown>>;

/** `weir --help`: every command with its summary. */
export function formatUsage(commands: readonly AnyCommand[]): string {
  const width = Math.max(...commands.map((c) => c.name.length), 'help'.length);
  const line = (name: string, summary: string): string => `  ${name.padEnd(width)}  ${summary}`;
  return [
    'usage: weir <command> [flags]',
    '',
    'commands:',
    ...commands.map((c) => line(c.name, c.summary)),
    line('help', "this text; 'weir help COMMAND' is 'weir COMMAND --help'"),
    '',
    "'weir COMMAND --help' lists the command's flags with their defaults.",
    '',
  ].join('\n');
}

// Parsers for values most commands have. Each takes the flag's name for its errors.

/** The text as given. */
export function text(_flag: string, v: string): string {
  return v;
}

/** Comma-separated items, trimmed, empty ones dropped. */
export function list(_flag: string, v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** true/1 or false/0. */
export function boolean(flag: string, v: string): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new UsageError(`--${flag}: expected true or false, got ${JSON.stringify(v)}`);
}

/** A switch's text: "true" when it was given. */
export function present(_flag: string, v: string): boolean {
  return v === 'true';
}

/** One of a few words. */
export function oneOf<V extends string>(values: readonly V[]): (flag: string, v: string) => V {
  const expected = values.length > 1 ? `${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}` : values.join('');
  return (flag, v) => {
    const found = values.find((w) => w === v);
    if (found === undefined) throw new UsageError(`--${flag}: expected ${expected}, got ${JSON.stringify(v)}`);
    return found;
  };
}

/** A whole number within bounds. */
export function integer(bounds: { min: number; max: number }): (flag: string, v: string) => number {
  return (flag, v) => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || n < bounds.min || n > bounds.max) {
      throw new UsageError(`--${flag}: expected an integer from ${bounds.min} to ${bounds.max}, got ${JSON.stringify(v)}`);
    }
    return n;
  };
}
