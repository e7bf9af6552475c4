/**
 * BENCHMARKS.md and bench/latency.svg from a results object, and from
 * nothing else: every figure, ratio and bar verdict is computed from it, and
 * the fixed text says only what holds for every run (what is measured, and
 * how). bench/run.ts calls report() after measuring; on its own,
 *
 *   node dist/bench/report.js [results.json]
 *
 * regenerates both files from a results file (default bench/results.json)
 * without measuring anything.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Results } from './run';
import { VARIANTS, WireSample, bars as wireBars, median, ratios as wireRatios } from './wire';

/** Figures as run.ts holds them (NaN when not measured) or as results.json reads back (null). */
type Figure = number | null | undefined;
type ColdStart = Results['coldStart'][number];
type OneChange = Results['oneChange'][number];
type PathPoint = Results['path'][number];
/** The modes of the path section and its chart. */
type Mode = 'bpf' | 'iptables';
/** The modes of the control-plane section, in its columns' order. */
type ControlMode = 'bpf' | 'nftables' | 'iptables';
const CONTROL_MODES: readonly ControlMode[] = ['bpf', 'nftables', 'iptables'];
const MODE_NAMES: Record<ControlMode, string> = { bpf: 'BPF', nftables: 'nftables', iptables: 'iptables' };

const MODES: readonly Mode[] = ['bpf', 'iptables'];
const SECTIONS = ['control', 'packet', 'path', 'wire', 'ffi'] as const;
type Section = (typeof SECTIONS)[number];
const HEADINGS: Record<Section, string> = {
  control: 'Control plane',
  packet: 'Dataplane per packet',
  path: 'Through a real namespace path',
  wire: 'wrk and iperf3, every dataplane side by side',
  ffi: 'FFI cost per map operation',
};

const measured = (v: Figure): v is number => typeof v === 'number' && Number.isFinite(v);
const count = (v: number): string => v.toLocaleString('en-US');
const num = (v: number): string => v.toLocaleString('en-US', { maximumFractionDigits: 2 });
const unit = (v: Figure, u: string): string => (measured(v) ? `${num(v)} ${u}` : '—');
const msText = (v: Figure): string => unit(v, 'ms');
const seconds = (ms: number): string => `${num(ms / 1000)} s`;

/** a ÷ b, with two decimals below 10 so that a ratio under 1 reads as one. */
function ratio(a: Figure, b: Figure): string {
  if (!measured(a) || !measured(b) || b <= 0) return '—';
  const q = a / b;
  return `${q < 10 ? q.toFixed(2) : q.toFixed(1)}×`;
}

const services = (n: number): string => `${count(n)} ${n === 1 ? 'service' : 'services'}`;
const pct = (v: number): string => `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(1)}%`;

type Verdict = 'pass' | 'fail' | 'not measured';
const verdictText = (v: Verdict): string => (v === 'fail' ? '**fail**' : v);

/** A target a figure of the run is held to. */
interface Bar {
  /** Which table row carries it. */
  readonly row: string;
  /** The control-plane scale whose table carries it; null: no such table. */
  readonly at?: number | null;
  /** The mode it holds, named in the table's bar cell. */
  readonly mode?: ControlMode;
  readonly what: string;
  readonly target: string;
  readonly figure: string;
  readonly verdict: Verdict;
}

function verdict(v: Figure, limit: number, timedOut = false): Verdict {
  if (timedOut) return 'fail';
  return measured(v) ? (v <= limit ? 'pass' : 'fail') : 'not measured';
}

/** The sections a run measured: `--sections a,b` keeps the others from the results before it. */
function sectionsOf(command: string): Set<Section> | null {
  const m = /--sections\s+(\S+)/.exec(command);
  if (!m?.[1]) return null;
  const named = m[1].split(',');
  return new Set(SECTIONS.filter((s) => named.includes(s)));
}

/** `make bench` runs `node dist/bench/run.js $(BENCH_ARGS)`: the same run through make. */
function makeCommand(command: string): string {
  const args = command.replace(/^node\s+\S*run\.js\s*/, '').trim();
  return args ? `make bench BENCH_ARGS='${args}'` : 'make bench';
}

class View {
  readonly full: number;
  readonly endpoints: number;
  readonly deadlineMs: number;
  readonly sections: Set<Section> | null;

  constructor(readonly r: Results) {
    this.full = r.params.services;
    this.endpoints = r.params.endpoints;
    this.deadlineMs = r.params.deadlineMs;
    this.sections = sectionsOf(r.command);
  }

  cold(mode: ControlMode, services: number): ColdStart | undefined {
    return this.r.coldStart?.find((c) => c.mode === mode && c.services === services);
  }

  change(mode: ControlMode, services: number): OneChange | undefined {
    return this.r.oneChange?.find((c) => c.mode === mode && c.services === services);
  }

  restart(services: number): NonNullable<Results['restart']>[number] | undefined {
    return this.r.restart?.find((x) => x.services === services);
  }

  point(mode: Mode, services: number): PathPoint | undefined {
    return this.r.path?.find((p) => p.mode === mode && p.services === services);
  }

  /** A point's p50, or nothing when it was not measured or not programmed in time. */
  p50(mode: Mode, services: number): number | undefined {
    const p = this.point(mode, services);
    return p && !p.timedOut && measured(p.latencyUs.p50) ? p.latencyUs.p50 : undefined;
  }

  /** Scales of the control-plane section, largest first. */
  controlScales(): number[] {
    return [...new Set((this.r.coldStart ?? []).map((c) => c.services))].sort((a, b) => b - a);
  }

  pathSizes(): number[] {
    return [...new Set((this.r.path ?? []).map((p) => p.services))].sort((a, b) => a - b);
  }

  /** The cold-start figure, or undefined when the agent was not ready within the deadline. */
  coldMs(c: ColdStart | undefined): number | undefined {
    return c && !c.timedOut && measured(c.ms) ? c.ms : undefined;
  }

  bars(): Bar[] {
    const bars: Bar[] = [];
    const scale = `${count(this.full)} services × ${count(this.endpoints)} endpoints`;
    const cold = this.cold('bpf', this.full);
    bars.push({
      row: 'cold',
      at: this.full,
      mode: 'bpf',
      what: `cold start, BPF, ${scale}`,
      target: '≤ 1 s',
      figure: this.coldCell(cold),
      verdict: cold ? verdict(cold.ms, 1000, cold.timedOut) : 'not measured',
    });
    // This bar is defined at one size: a run at other sizes does not meet or miss it.
    const atTarget = this.endpoints === 10 ? this.cold('bpf', 10_000) : undefined;
    bars.push({
      row: 'cold',
      at: atTarget ? atTarget.services : null,
      mode: 'bpf',
      what: 'cold start, BPF, 10,000 services × 10 endpoints',
      target: '≤ 1.5 s',
      figure: atTarget ? this.coldCell(atTarget) : 'not measured at this size',
      verdict: atTarget ? verdict(atTarget.ms, 1500, atTarget.timedOut) : 'not measured',
    });
    const change = this.change('bpf', this.full);
    bars.push({
      row: 'changeP99',
      at: this.full,
      mode: 'bpf',
      what: `one endpoint change → written, p99, BPF, ${scale}`,
      target: '≤ 10 ms',
      figure: cold?.timedOut ? 'not measured (not ready)' : msText(change?.programmingMs.p99),
      verdict: cold?.timedOut ? 'not measured' : verdict(change?.programmingMs.p99, 10),
    });
    bars.push({
      row: 'rss',
      at: this.full,
      mode: 'bpf',
      what: `agent peak RSS, BPF, ${scale}`,
      target: '≤ 200 MB',
      figure: unit(cold?.peakRssMb, 'MB'),
      verdict: verdict(cold?.peakRssMb, 200),
    });
    // The fallbacks' bars, at the full scale: programmed from cold, and one change.
    for (const [mode, coldMs, changeMs] of [
      ['nftables', 10_000, 50],
      ['iptables', 60_000, 1000],
    ] as const) {
      const c = this.cold(mode, this.full);
      const ch = this.change(mode, this.full);
      bars.push({
        row: 'cold',
        at: this.full,
        mode,
        what: `cold start, ${mode}, ${scale}`,
        target: `≤ ${seconds(coldMs)}`,
        figure: this.coldCell(c),
        verdict: c ? verdict(c.ms, coldMs, c.timedOut) : 'not measured',
      });
      bars.push({
        row: 'changeP99',
        at: this.full,
        mode,
        what: `one endpoint change → written, p99, ${mode}, ${scale}`,
        target: changeMs >= 1000 ? `≤ ${seconds(changeMs)}` : `≤ ${msText(changeMs)}`,
        figure: c?.timedOut ? 'not measured (not ready)' : msText(ch?.programmingMs.p99),
        verdict: c?.timedOut || !ch ? 'not measured' : verdict(ch.programmingMs.p99, changeMs),
      });
    }
    const pk = this.r.packet;
    bars.push({
      row: 'hot',
      what: 'established flow, hot, per packet',
      target: '≤ 100 ns',
      figure: unit(pk?.establishedNs, 'ns'),
      verdict: verdict(pk?.establishedNs, 100),
    });
    const g = this.growth('bpf');
    bars.push({
      row: 'growth',
      what: g ? `new-connection p50, BPF, ${count(g.large)} services against ${count(g.small)}` : 'new-connection p50, BPF, largest size against smallest',
      target: '≤ +10%',
      figure: g && measured(g.pct) ? pct(g.pct) : '—',
      verdict: g ? verdict(g.pct, 10) : 'not measured',
    });
    // The new-connection rates through the real path (wire section): held when the median of the per-round ratios is.
    for (const res of this.r.wire ?? []) {
      for (const b of wireBars(res)) {
        if (!b.rounds) continue;
        bars.push({
          row: 'wire',
          what: `new connections, ${b.path}, ${services(res.services)}`,
          target: `≥ ${b.target}`,
          figure: `${b.median}× (${b.held} of ${b.rounds} rounds)`,
          verdict: b.met ? 'pass' : 'fail',
        });
      }
    }
    return bars;
  }

  /** How much a mode's p50 grows from the smallest path size to the largest. */
  growth(mode: Mode): { small: number; large: number; pct: number } | undefined {
    const sizes = this.pathSizes();
    const small = sizes[0];
    const large = sizes[sizes.length - 1];
    if (small === undefined || large === undefined || small === large) return undefined;
    const a = this.p50(mode, small);
    const b = this.p50(mode, large);
    return { small, large, pct: a !== undefined && b !== undefined && a > 0 ? (b / a - 1) * 100 : NaN };
  }

  coldCell(c: ColdStart | undefined): string {
    if (!c) return '—';
    if (c.timedOut) return `not ready within ${seconds(c.ms)}`;
    const runs = c.allMs && c.allMs.length > 1 ? ` (runs: ${c.allMs.map(num).join(', ')})` : '';
    return `${msText(c.ms)}${runs}`;
  }

  /** A one-change cell: the mode was not ready in time, or no changes were measured. */
  changeCell(c: OneChange | undefined, cold: ColdStart | undefined, f: (c: OneChange) => Figure, u = 'ms'): string {
    if (cold?.timedOut) return 'not measured (not ready)';
    return c ? unit(f(c), u) : '—';
  }
}

/** Connection latency (p50) versus number of services, one line per mode. */
export function latencyChart(r: Results): string {
  const v = new View(r);
  const W = 640;
  const H = 360;
  const m = { l: 70, r: 150, t: 40, b: 50 };
  const sizes = v.pathSizes();
  const ys = sizes.flatMap((s) => MODES.map((mode) => v.p50(mode, s))).filter((y): y is number => y !== undefined);
  const maxY = ys.length ? Math.max(...ys) * 1.15 : 1;
  // Sizes span orders of magnitude: a log axis when every size is positive, else evenly spaced.
  const logAxis = sizes.length > 1 && sizes.every((s) => s > 0);
  const lo = Math.log10(sizes[0] ?? 1);
  const hi = Math.log10(sizes[sizes.length - 1] ?? 1);
  const span = W - m.l - m.r;
  const x = (s: number, i: number): number => Math.round(m.l + (sizes.length < 2 ? span / 2 : logAxis && hi > lo ? ((Math.log10(s) - lo) / (hi - lo)) * span : (i / (sizes.length - 1)) * span));
  const y = (val: number): number => Math.round((H - m.b - (val / maxY) * (H - m.t - m.b)) * 10) / 10;
  const colors: Record<Mode, string> = { bpf: '#1f77b4', iptables: '#d62728' };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2 - 60}" y="22" font-size="14">New-connection latency (p50) vs services</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${(W - m.r + m.l) / 2 - 40}" y="${H - 12}">services${logAxis ? ' (log scale)' : ''}</text>`,
    `<text x="12" y="${m.t - 10}">µs</text>`,
  ];
  for (let t = 0; t <= 4; t++) {
    const val = (maxY * t) / 4;
    parts.push(`<line x1="${m.l - 4}" y1="${y(val)}" x2="${W - m.r}" y2="${y(val)}" stroke="#ddd"/>`, `<text x="${m.l - 8}" y="${y(val) + 4}" text-anchor="end">${Math.round(val)}</text>`);
  }
  sizes.forEach((s, i) => parts.push(`<text x="${x(s, i)}" y="${H - m.b + 18}" text-anchor="middle">${count(s)}</text>`));
  MODES.forEach((mode, k) => {
    const color = colors[mode];
    const pts = sizes.flatMap((s, i) => {
      const p50 = v.p50(mode, s);
      return p50 === undefined ? [] : [{ cx: x(s, i), cy: y(p50) }];
    });
    parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.map((p) => `${p.cx},${p.cy}`).join(' ')}"/>`);
    for (const p of pts) parts.push(`<circle cx="${p.cx}" cy="${p.cy}" r="4" fill="${color}"/>`);
    parts.push(`<rect x="${W - m.r + 20}" y="${m.t + k * 22}" width="14" height="4" fill="${color}"/>`, `<text x="${W - m.r + 40}" y="${m.t + 6 + k * 22}">${mode}</text>`);
  });
  parts.push('</svg>');
  return parts.join('\n') + '\n';
}

const row = (cells: string[]): string => `| ${cells.join(' | ')} |`;

function runSection(v: View, source: string): string[] {
  const r = v.r;
  const mc = r.machine ?? {};
  const machine = [mc.cpu ?? 'CPU not recorded', mc.memory, mc.kernel ? `Linux ${mc.kernel}` : undefined, mc.node ? `Node ${mc.node}` : undefined].filter(Boolean).join(', ');
  const p = r.params;
  const lines = [
    '## The run',
    '',
    `Everything below is computed from \`${source}\`, which holds the raw figures.`,
    '',
    `- Machine: ${machine}.${mc.firstTouch && mc.retouch ? ` Writing memory: ${mc.firstTouch} fresh (page faults included), ${mc.retouch} rewritten.` : ''}`,
    `- Date: ${r.date ?? 'date not recorded'}.`,
    `- Command: \`${r.command}\`${p.quick ? ' (a `--quick` smoke run: it checks that the suite works, not the bars)' : ''}.`,
    `- Sizes: ${count(p.services)} services × ${count(p.endpoints)} endpoints (and ${count(p.compareServices)} services, where every mode is measured in full); up to ${count(p.changes)} endpoint changes per agent; ${count(p.ct)} conntrack entries; ${count(p.conns)} connections per path point at ${p.pathSizes.map(count).join(' / ')} services; ${count(p.runs)} run(s) per median; deadline ${seconds(p.deadlineMs)}.`,
  ];
  if (v.sections) {
    const kept = SECTIONS.filter((s) => !v.sections!.has(s));
    lines.push(
      `- This run (\`--sections\`) measured only: ${[...v.sections].map((s) => HEADINGS[s]).join(', ') || 'nothing'}. ${kept.map((s) => HEADINGS[s]).join(', ')}: figures kept in the results file from an earlier run; the machine, date, command and sizes above are this run's.`,
    );
  }
  lines.push(
    '',
    'To measure again:',
    '',
    `- this run: \`${makeCommand(r.command)}\` (or \`${r.command}\` after \`make\`);`,
    '- the whole suite at the default sizes: `make bench`;',
    '- this file and bench/latency.svg from a results file, without measuring: `node dist/bench/report.js [bench/results.json]`.',
    '',
  );
  return lines;
}

function barsSection(bars: Bar[]): string[] {
  const passed = bars.filter((b) => b.verdict === 'pass').length;
  const failed = bars.filter((b) => b.verdict === 'fail').length;
  return [
    '## Bars',
    '',
    `${passed} of ${bars.length} pass, ${failed} fail${bars.length - passed - failed ? `, ${bars.length - passed - failed} not measured` : ''}.`,
    '',
    '| bar | target | figure | |',
    '|---|---|---|---|',
    ...bars.map((b) => row([b.what, b.target, b.figure, verdictText(b.verdict)])),
    '',
  ];
}

/** The bars a table row carries, as one cell: "≤ 1 s: pass; ≤ 1.5 s: pass". */
function barCell(bars: Bar[], id: string, services?: number): string {
  return bars
    .filter((b) => b.row === id && (services === undefined || b.at === services))
    .map((b) => `${b.mode ? `${MODE_NAMES[b.mode]} ` : ''}${b.target}: ${verdictText(b.verdict)}`)
    .join('; ');
}

function fromEarlier(v: View, s: Section): string[] {
  return v.sections && !v.sections.has(s) ? ['Not measured in this run: these figures come from an earlier run.', ''] : [];
}

function controlSection(v: View, bars: Bar[]): string[] {
  const scales = v.controlScales();
  if (!scales.length) return ['## Control plane', '', 'Not in the results file.', ''];
  const lines = [
    '## Control plane',
    '',
    `One agent in a one-node box, in BPF, nftables and iptables mode: cold start, one endpoint change, drift comparison, peak RSS, and (BPF) restart, at ${scales.map(count).join(' and ')} services × ${count(v.endpoints)} endpoints.`,
    '',
    ...fromEarlier(v, 'control'),
  ];
  for (const n of scales) {
    // Results from before nftables mode was measured have no such column.
    const modes = CONTROL_MODES.filter((m) => v.cold(m, n));
    const cold = (m: ControlMode): ColdStart | undefined => v.cold(m, n);
    const change = (m: ControlMode): OneChange | undefined => v.change(m, n);
    const changes = (m: ControlMode): string => count(change(m)?.programmingMs.n ?? 0);
    const r = (what: string, cell: (m: ControlMode) => string, bar = ''): string => row([what, ...modes.map(cell), bar]);
    const changeRow = (what: string, f: (c: OneChange) => Figure, bar = ''): string => r(what, (m) => v.changeCell(change(m), cold(m), f), bar);
    const rs = v.restart(n);
    lines.push(
      `### ${count(n)} services × ${count(v.endpoints)} endpoints`,
      '',
      `| | ${modes.map((m) => MODE_NAMES[m]).join(' | ')} | bars |`,
      `|---|${modes.map(() => '---|').join('')}---|`,
      r(`cold start: spawn → ready (median of ${modes.map((m) => cold(m)?.runs ?? 0).join(' / ')} runs)`, (m) => v.coldCell(cold(m)), barCell(bars, 'cold', n)),
      r('of which the first sync (plan + write)', (m) => (cold(m)?.timedOut ? '—' : msText(cold(m)?.syncMs))),
    );
    const ph = cold('bpf')?.phases;
    if (ph)
      lines.push(
        r('agent log, ms since its process started: manifests read / BPF objects loaded / ready', (m) => (m === 'bpf' ? `${num(ph.sourcesAtMs)} / ${num(ph.loadedAtMs)} / ${num(ph.readyAtMs)}` : '')),
      );
    lines.push(
      changeRow(`one endpoint change → written, p50 (${modes.map(changes).join(' / ')} changes)`, (c) => c.programmingMs.p50),
      changeRow('one endpoint change → written, p99', (c) => c.programmingMs.p99, barCell(bars, 'changeP99', n)),
      changeRow('of which the sync itself, p99', (c) => c.syncMs.p99),
      changeRow('file written → synced (harness wall time), p99', (c) => c.wallMs?.p99 ?? NaN),
    );
    const drift = (m: ControlMode): string => {
      const d = change(m)?.driftMs;
      if (!d || cold(m)?.timedOut) return '';
      const slice = change(m)?.driftSliceMs;
      return `${msText(d.p50)}${slice ? ` / ${msText(slice.p99)}` : ' / whole'} (${count(d.n)})`;
    };
    if (modes.some((m) => drift(m))) lines.push(r('drift comparison while the changes ran: p50 whole / p99 longest slice (comparisons)', drift));
    lines.push(r('agent peak RSS', (m) => (cold(m)?.timedOut ? '—' : unit(cold(m)?.peakRssMb, 'MB')), barCell(bars, 'rss', n)));
    if (rs) {
      lines.push(
        r(`restart over the pinned dataplane: spawn → ready (its first sync wrote ${num(rs.upserts)}, deleted ${num(rs.deletes)} entries)`, (m) => (m === 'bpf' ? msText(rs.ms) : '')),
        r('peak RSS of that restart', (m) => (m === 'bpf' ? unit(rs.peakRssMb, 'MB') : '')),
      );
    }
    lines.push('');
  }
  return lines;
}

function packetSection(v: View, bars: Bar[]): string[] {
  const pk = v.r.packet;
  if (!pk) return ['## Dataplane per packet', '', 'Not in the results file.', ''];
  const bar = barCell(bars, 'hot');
  return [
    '## Dataplane per packet',
    '',
    `The BPF program's time per packet (BPF_PROG_TEST_RUN) with ${pk.setup} in its maps; medians of ${pk.runs} round(s).`,
    '',
    ...fromEarlier(v, 'packet'),
    '| packet | ns | less the floor | bar |',
    '|---|---|---|---|',
    row([`established flow, hot (${count(pk.repeat)} repeated runs)`, unit(pk.establishedNs, 'ns'), '', bar]),
    row(['established flow, single run', unit(pk.establishedSingleNs, 'ns'), unit(measured(pk.establishedSingleNs) && measured(pk.floorNs) ? pk.establishedSingleNs - pk.floorNs : NaN, 'ns'), '']),
    row(['first packet of a new flow, single run', unit(pk.newFlowNs, 'ns'), unit(measured(pk.newFlowNs) && measured(pk.floorNs) ? pk.newFlowNs - pk.floorNs : NaN, 'ns'), '']),
    row(['not a service packet, single run', unit(pk.passNs, 'ns'), unit(measured(pk.passNs) && measured(pk.floorNs) ? pk.passNs - pk.floorNs : NaN, 'ns'), '']),
    ...(pk.loopbackPassNs === undefined
      ? []
      : [
          row([
            "the node's own loopback packet, no service's (weir_tc_host on lo), single run",
            unit(pk.loopbackPassNs, 'ns'),
            unit(measured(pk.loopbackPassNs) && measured(pk.floorNs) ? pk.loopbackPassNs - pk.floorNs : NaN, 'ns'),
            '',
          ]),
        ]),
    ...(pk.ipv6 === undefined
      ? []
      : [
          row([`IPv6: established flow, hot (${count(pk.repeat)} repeated runs)`, unit(pk.ipv6.establishedNs, 'ns'), '', '']),
          ...(
            [
              ['IPv6: established flow, single run', pk.ipv6.establishedSingleNs],
              ['IPv6: first packet of a new flow, single run', pk.ipv6.newFlowNs],
              ['IPv6: not a service packet, single run', pk.ipv6.passNs],
            ] as const
          ).map(([what, ns]) => row([what, unit(ns, 'ns'), unit(measured(ns) && measured(pk.floorNs) ? ns - pk.floorNs : NaN, 'ns'), ''])),
        ]),
    row(['harness floor, single run: a non-IP frame', unit(pk.floorNs, 'ns'), '', '']),
    '',
  ];
}

function pathSection(v: View, bars: Bar[]): string[] {
  const sizes = v.pathSizes();
  const cell = (mode: Mode, n: number, f: (p: PathPoint) => string): string => {
    const p = v.point(mode, n);
    return !p ? '—' : p.timedOut ? 'not ready in time' : f(p);
  };
  const lat = (x: Figure): string => unit(x, 'µs');
  if (!sizes.length) return ['## Through a real namespace path', '', 'Not in the results file.', ''];
  const lines = [
    '## Through a real namespace path',
    '',
    `New-connection latency from a pod to a ClusterIP backed by another pod on the node, BPF and iptables mode, with ${sizes.length === 1 ? services(sizes[0] ?? 0) : `${sizes.map(count).join(' / ')} services`} programmed.`,
    '',
    ...fromEarlier(v, 'path'),
    '| services | BPF p50 | BPF p99 | BPF conn/s | iptables p50 | iptables p99 | iptables conn/s | p50 iptables ÷ BPF |',
    '|---|---|---|---|---|---|---|---|',
    ...sizes.map((n) =>
      row([
        count(n),
        cell('bpf', n, (p) => lat(p.latencyUs.p50)),
        cell('bpf', n, (p) => lat(p.latencyUs.p99)),
        cell('bpf', n, (p) => num(p.connPerSec)),
        cell('iptables', n, (p) => lat(p.latencyUs.p50)),
        cell('iptables', n, (p) => lat(p.latencyUs.p99)),
        cell('iptables', n, (p) => num(p.connPerSec)),
        ratio(v.p50('iptables', n), v.p50('bpf', n)),
      ]),
    ),
    '',
  ];
  const gb = v.growth('bpf');
  const gi = v.growth('iptables');
  if (gb) {
    const g = (x: { pct: number } | undefined): string => (x && measured(x.pct) ? pct(x.pct) : 'not measured');
    lines.push(`p50 at ${count(gb.large)} services against ${count(gb.small)}: BPF ${g(gb)}, iptables ${g(gi)}. Bar (BPF): ${barCell(bars, 'growth')}.`, '');
  }
  lines.push('![latency vs services](bench/latency.svg)', '');
  return lines;
}

function wireSection(v: View): string[] {
  const runs = v.r.wire ?? [];
  if (!runs.length) return [`## ${HEADINGS.wire}`, '', 'Not in the results file.', ''];
  const first = runs[0]!;
  const lines = [
    `## ${HEADINGS.wire}`,
    '',
    `A client pod to an nginx pod on the same node through a ClusterIP, each dataplane on a node of its own in one box, ${first.rounds} interleaved round(s) of ${first.seconds} s per client: wrk -t1 -c8 with a new connection per request (\`Connection: close\`) and with keep-alive, and one iperf3 stream. Medians of the rounds; "× none" is the median of the per-round ratios to no proxy.`,
    '',
    ...fromEarlier(v, 'wire'),
    '| services | dataplane | programmed | new conn/s | × none | p50 | p99 | keep-alive req/s | keep-alive p99 | iperf3 |',
    '|---|---|---|---|---|---|---|---|---|---|',
  ];
  for (const res of runs) {
    for (const variant of VARIANTS) {
      const ss = res.samples[variant];
      if (!ss?.length) {
        if (res.skipped[variant]) lines.push(row([count(res.services), variant, res.skipped[variant], '—', '—', '—', '—', '—', '—', '—']));
        continue;
      }
      const m = (f: (s: WireSample) => number): number => median(ss.map(f));
      const ratioNone = median(wireRatios(res, variant, 'none'));
      lines.push(
        row([
          count(res.services),
          variant,
          res.programmedMs[variant] === undefined ? '—' : unit(res.programmedMs[variant], 'ms'),
          num(Math.round(m((s) => s.closeRps))),
          measured(ratioNone) ? `${ratioNone.toFixed(2)}×` : '—',
          unit(
            m((s) => s.closeP50Us),
            'µs',
          ),
          unit(
            m((s) => s.closeP99Us),
            'µs',
          ),
          num(Math.round(m((s) => s.keepaliveRps))),
          unit(
            m((s) => s.keepaliveP99Us),
            'µs',
          ),
          `${m((s) => s.iperfGbps).toFixed(2)} Gbit/s`,
        ]),
      );
    }
  }
  lines.push('', '| services | bar | median | rounds held |', '|---|---|---|---|');
  for (const res of runs) for (const b of wireBars(res)) if (b.rounds) lines.push(row([count(res.services), b.bar, `${b.median}×`, `${b.held} of ${b.rounds}`]));
  lines.push('');
  return lines;
}

function ffiSection(v: View): string[] {
  const ffi = v.r.ffi ?? [];
  const base = ffi[0];
  if (!base) return ['## FFI cost per map operation', '', 'Not in the results file.', ''];
  const lines = [
    '## FFI cost per map operation',
    '',
    'One BPF hash map update through each FFI backend of the native library, one element per call and many per call.',
    '',
    ...fromEarlier(v, 'ffi'),
    `| backend | single update | batched, per element | single ÷ ${base.backend} |`,
    '|---|---|---|---|',
    ...ffi.map((f) => row([f.backend, unit(f.singleNsPerOp, 'ns'), unit(f.batchNsPerElem, 'ns'), ratio(f.singleNsPerOp, base.singleNsPerOp)])),
    '',
  ];
  return lines;
}

/** How the figures are obtained: a description of bench/run.ts, true of every run it makes. */
const METHODS = [
  '## Methods',
  '',
  '**Common.** Control-plane and path figures come from a cluster in a box (test/box): network namespaces on this machine, one node, the agent (`weir run`) reading generated manifests from a directory through its file source. Each generated service has one port and one EndpointSlice of ready endpoints. BPF-mode agents run with `--sync-period 1s`, so drift scans run while changes are measured, and with a larger `--lb-map-entries` when the sizes need it. A median of an even count is the lower middle value; a p-th percentile of n values is the one at rank ⌈p·n⌉, so below 100 values p99 is the largest.',
  '',
  "**Cold start.** Each run: `weir cleanup`, a settle pause (the kernel frees the maps cleanup unpinned after it returns, which a node's first start does not pay), then wall time from spawning the agent to its `ready` log line. The agent logs `ready` after its first sync that succeeded, with every service programmed, so the figure includes Node.js start-up, reading the manifests, loading the BPF objects and the first sync. The figure is the median of the runs; every run is listed. An agent not ready within the deadline is reported as such, and that mode is not measured further at that scale. The first sync is the duration the agent logs for it. The log row gives the agent's own marks (medians): manifests read, BPF objects loaded, ready.",
  '',
  '**One change.** With the last cold-start run\'s agent still running, a manifest of its own with one service is rewritten, alternately with one and two endpoints, each write waiting for the agent\'s sync of it; the first write creates the service and is not counted. "Change → written" is the programming time the agent logs: from its store receiving the changed object to the end of the sync that wrote it (millisecond clock). "Sync itself" is that sync\'s duration. "File written → synced" is timed by the harness from writing the file to reading the agent\'s log line, so it includes the file source\'s debounce.',
  '',
  "**Drift scan.** The scans the agent logged during the changes as finding no drift: each scan's whole duration and its longest slice (a scan runs in slices between which the agent keeps syncing).",
  '',
  "**Peak RSS.** The agent's VmHWM, read when it is ready in each run and after the changes; the largest.",
  '',
  '**Restart.** After the BPF runs at a scale, with the one-service manifest removed, a new agent is started over the dataplane the last one left pinned (no cleanup): wall time from spawn to `ready`, its peak RSS, and what its first sync wrote and deleted.',
  '',
  "**Per packet.** BPF_PROG_TEST_RUN of the program weir attaches to pod interfaces, loaded by the agent's loader, its maps written by the agent's sync code, and conntrack filled with unrelated flows (the setup line counts conntrack after the measurement, flows it created included). Hot: a ping-pong pair of services, each backed by the other's address, so that each repeated run processes the packet the run before rewrote: an established flow with a real DNAT; the kernel's time per run. The other rows are medians of many single runs, each on a fresh copy of the packet, and include the harness's own cost, shown as the floor (a frame the program ignores). A new flow is a packet from a source address and port not seen before; \"not a service\" is TCP to an address no service has.",
  '',
  "**Path.** A client pod and a backend pod (an echo server) on one node; n − 1 generated services and the measured one, whose name sorts last (the worst case for iptables' walk of its services chain), all backed by the backend pod. For each size and mode: `weir cleanup`, the agent started and ready, a pause for device attachment, unmeasured warm-up connections, then sequential connections from the client pod to the ClusterIP, each timed in the client from before connect to the HTTP response. conn/s is the connection count over the series' wall time.",
  '',
  "**wrk and iperf3.** One box with a node per dataplane: no proxy (the client addresses the nginx pod), the same with a tc program that passes every packet at once attached at ingress and egress of both pods' devices (tc-floor, bench/floor.bpf.c: what running any tc program there costs, the floor of a tc dataplane), weir BPF with the pods outside its cgroup (tc path) and inside it (socket path), weir BPF with the client addressing the nginx pod itself (bpf-direct: what having the programs attached costs), weir nftables (where the build has the mode), weir iptables, and a ruleset in the shape of kube-proxy's nftables mode loaded with `nft -f` (bench/kube-proxy-nft.ts). Each node has a client pod and an nginx pod (one worker, a fixed 3-byte body) with an iperf3 server beside it. Per size, n − 1 generated services of 10 unreachable endpoints and one measured service per node, sorting last; every dataplane is programmed once (the time is logged), then unmeasured warm-up, then rounds, each running every dataplane in turn, the order rotated by one per round.",
  '',
  '**FFI.** Per backend, a BPF hash map created through the native library: single is a series of one-element update calls, time per call; batched is one call updating many elements, time per element.',
  '',
];

/** source: the results file, as the report names it. */
export function render(r: Results, source = 'bench/results.json'): string {
  const v = new View(r);
  const bars = v.bars();
  const lines = [
    '# weir benchmarks',
    '',
    ...runSection(v, source),
    ...barsSection(bars),
    ...controlSection(v, bars),
    ...packetSection(v, bars),
    ...pathSection(v, bars),
    ...wireSection(v),
    ...ffiSection(v),
    ...METHODS,
  ];
  return lines.join('\n');
}

export function report(r: Results, repo: string, source = 'bench/results.json'): void {
  fs.writeFileSync(path.join(repo, 'bench', 'latency.svg'), latencyChart(r));
  fs.writeFileSync(path.join(repo, 'BENCHMARKS.md'), render(r, source));
}

if (require.main === module) {
  // dist/bench/report.js: the repository is two levels up.
  const repo = path.resolve(__dirname, '..', '..');
  const file = process.argv[2] ? path.resolve(process.argv[2]) : path.join(repo, 'bench', 'results.json');
  const source = path.relative(repo, file).startsWith('..') ? file : path.relative(repo, file);
  report(JSON.parse(fs.readFileSync(file, 'utf8')) as Results, repo, source);
  process.stdout.write(`BENCHMARKS.md and bench/latency.svg written from ${source}\n`);
}
