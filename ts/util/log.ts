/**
 * Structured logs: one JSON object per line on stderr, with a level, a
 * message and the context that names what it is about (file, object, field).
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };
export type Fields = Record<string, string | number | boolean | null | undefined | string[]>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
}

export function parseLevel(s: string): Level {
  if (s in RANK) return s as Level;
  throw new Error(`--log-level: expected debug, info, warn or error, got ${JSON.stringify(s)}`);
}

export function createLogger(level: Level = 'info', write: (line: string) => void = (l) => process.stderr.write(l + '\n')): Logger {
  const min = RANK[level];
  const emit = (lv: Level, msg: string, fields?: Fields): void => {
    if (RANK[lv] < min) return;
    write(JSON.stringify({ ts: new Date().toISOString(), level: lv, msg, ...fields }));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
}

export function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
