/**
 * A minimal Prometheus registry: counters, gauges (read at scrape time) and
 * histograms, rendered in the text exposition format. No dependency: the
 * agent needs a handful of series, not a client library.
 */
export type Labels = Record<string, string>;

function labelText(l: Labels | undefined): string {
  if (!l || Object.keys(l).length === 0) return '';
  return `{${Object.entries(l)
    .map(([k, v]) => `${k}="${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
    .join(',')}}`;
}

interface Metric {
  render(): string[];
}

export class Counter implements Metric {
  private readonly values = new Map<string, { labels?: Labels; v: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}

  inc(by = 1, labels?: Labels): void {
    const k = labelText(labels);
    const cur = this.values.get(k);
    if (cur) cur.v += by;
    else this.values.set(k, { ...(labels ? { labels } : {}), v: by });
  }

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.values.size === 0) out.push(`${this.name} 0`);
    for (const { labels, v } of this.values.values()) out.push(`${this.name}${labelText(labels)} ${v}`);
    return out;
  }
}

/** A gauge or counter whose samples are computed when scraped (e.g. from BPF maps). */
export class Collected implements Metric {
  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: 'gauge' | 'counter',
    private readonly collect: () => Array<{ labels?: Labels; value: number }>,
  ) {}

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
    for (const s of this.collect()) out.push(`${this.name}${labelText(s.labels)} ${s.value}`);
    return out;
  }
}

export class Histogram implements Metric {
  private readonly counts: number[];
  private sum = 0;
  private count = 0;
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {
    this.counts = buckets.map(() => 0);
  }

  observe(v: number): void {
    this.sum += v;
    this.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) this.counts[i]!++;
  }

  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    this.buckets.forEach((b, i) => out.push(`${this.name}_bucket{le="${b}"} ${this.counts[i]}`));
    out.push(`${this.name}_bucket{le="+Inf"} ${this.count}`, `${this.name}_sum ${this.sum}`, `${this.name}_count ${this.count}`);
    return out;
  }
}

export class Registry {
  private readonly metrics: Metric[] = [];

  add<M extends Metric>(m: M): M {
    this.metrics.push(m);
    return m;
  }

  render(): string {
    return this.metrics.flatMap((m) => m.render()).join('\n') + '\n';
  }
}

/** Seconds, from 0.5 ms to 60 s: sync and programming latencies span that. */
export const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
