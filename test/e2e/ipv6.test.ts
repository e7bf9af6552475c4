/**
 * IPv6 and dual-stack Services end to end, in both modes: real packets
 * from real clients (curl) in pod namespaces, through ip6tables rules or
 * the tc programs with the IPv6 maps, as an agent programmed them from
 * manifests. (A node process is a client in iptables mode only: this
 * suite gives its BPF agent no cgroup for the socket hooks, which
 * prog6.test.ts and services6.test.ts cover.) The services table over
 * IPv6, in the dual-stack cluster in a box, is services6.test.ts.
 *
 * A small topology of its own, with curl as the client: one node
 * namespace and three pod namespaces on veths, each pod with an IPv4 /32
 * and an IPv6 /128 routed through the node (169.254.1.1 and fe80::1 as the
 * gateway on every host-side veth). Pods p1 and p2 are backends (HTTP on
 * [::]:8080 answering "NAME PEER"), c is the client. Nothing links to the
 * root namespace; everything is removed in `after`, also on failure.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { CLI, MODE, waitFor } from '../box/box';
import { NsProcess, addNetns, delNetnsSync, nsMust, nsRun } from '../box/netns';

const id = Math.random().toString(36).slice(2, 8);
const NODE = `w6n-${id}`;
const PODS = { p1: 1, p2: 2, c: 3 } as const;
type PodName = keyof typeof PODS;
const podNs = (p: PodName): string => `w6${p}-${id}`;
const v4 = (p: PodName): string => `10.244.1.${PODS[p]}`;
const v6 = (p: PodName): string => `fd00:10:244:1::${PODS[p]}`;
const NODE_V4 = '192.168.77.10';
const NODE_V6 = 'fd00:77::10';

interface Ctx {
  dir: string;
  pinRoot: string;
  procs: NsProcess[];
  made: string[];
}

const s = suite<Ctx>(`ipv6 (${MODE})`);

/** An HTTP server on [::]:8080 (both families) answering "NAME PEER" with the peer the backend saw. */
function server(name: string): string {
  return `require('http').createServer((q, r) => r.end(${JSON.stringify(name)} + ' ' + q.socket.remoteAddress.replace(/^::ffff:/, '') + '\\n')).listen(8080, '::', () => console.log('ready'))`;
}

const MANIFESTS = `apiVersion: v1
kind: Service
metadata: {name: dual, namespace: e2e}
spec:
  type: NodePort
  ipFamilyPolicy: RequireDualStack
  ipFamilies: [IPv4, IPv6]
  clusterIP: 10.96.60.1
  clusterIPs: [10.96.60.1, "fd00:96::60:1"]
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30660}]
---
apiVersion: v1
kind: Service
metadata: {name: only6, namespace: e2e}
spec:
  ipFamilies: [IPv6]
  clusterIP: "fd00:96::60:2"
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty6, namespace: e2e}
spec:
  ipFamilies: [IPv6]
  clusterIP: "fd00:96::60:3"
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: empty4, namespace: e2e}
spec:
  clusterIP: 10.96.60.4
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: hc, namespace: e2e}
spec:
  type: LoadBalancer
  ipFamilies: [IPv6, IPv4]
  clusterIP: "fd00:96::60:5"
  clusterIPs: ["fd00:96::60:5", 10.96.60.5]
  externalTrafficPolicy: Local
  healthCheckNodePort: 32660
  ports: [{name: http, port: 80, targetPort: 8080, nodePort: 30665}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hc-v4, namespace: e2e, labels: {kubernetes.io/service-name: hc}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: [${v4('p1')}], nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: hc-v6, namespace: e2e, labels: {kubernetes.io/service-name: hc}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: ["${v6('p1')}"], nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-v4, namespace: e2e, labels: {kubernetes.io/service-name: dual}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: [${v4('p1')}], nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: dual-v6, namespace: e2e, labels: {kubernetes.io/service-name: dual}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: ["${v6('p2')}"], nodeName: n1}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: only6-v6, namespace: e2e, labels: {kubernetes.io/service-name: only6}}
addressType: IPv6
ports: [{name: http, port: 8080}]
endpoints:
  - {addresses: ["${v6('p1')}"], nodeName: n1}
`;

/** curl from a namespace: the body, or the error curl reported (bounded by --max-time). */
async function curl(ns: string, url: string): Promise<{ ok: boolean; text: string; ms: number }> {
  const t0 = Date.now();
  const r = await nsRun(ns, ['curl', '-sS', '-g', '--max-time', '3', url], { timeoutMs: 6000 });
  return { ok: r.code === 0, text: (r.code === 0 ? r.stdout : r.stderr).trim(), ms: Date.now() - t0 };
}

s.before(async (ctx) => {
  ctx.procs = [];
  ctx.made = [];
  ctx.dir = fs.mkdtempSync(path.join(os.tmpdir(), `weir-v6-${id}-`));
  ctx.pinRoot = `/sys/fs/bpf/weir-v6-${id}`;
  // DAD off before any device exists: addresses are usable at once.
  const noDad = ['sysctl', '-qw', 'net.ipv6.conf.all.accept_dad=0', 'net.ipv6.conf.default.accept_dad=0'];
  for (const ns of [NODE, ...Object.keys(PODS).map((p) => podNs(p as PodName))]) {
    await addNetns(ns);
    ctx.made.push(ns);
    await nsMust(ns, noDad);
  }
  await nsMust(NODE, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  await nsMust(NODE, ['ip', 'addr', 'add', `${NODE_V4}/32`, 'dev', 'lo']);
  await nsMust(NODE, ['ip', 'addr', 'add', `${NODE_V6}/128`, 'dev', 'lo']);
  // A node process's connect needs some route to the service address before
  // nat OUTPUT rewrites it (a real node has its default route): one to the
  // service range, as the node has no other link (so does a service address
  // without endpoints, which is rejected in filter FORWARD after routing).
  const serviceRoute = ['ip', '-6', 'route', 'add', 'fd00:96::/64', 'dev'];
  for (const p of Object.keys(PODS) as PodName[]) {
    const vh = `vh${PODS[p]}-${id}`.slice(0, 15);
    const pod = podNs(p);
    await nsMust(NODE, ['ip', 'link', 'add', vh, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', pod]);
    await nsMust(NODE, ['ip', 'link', 'set', vh, 'up']);
    await nsMust(NODE, ['ip', 'addr', 'add', '169.254.1.1/32', 'dev', vh]);
    await nsMust(NODE, ['ip', 'addr', 'add', 'fe80::1/64', 'dev', vh]);
    await nsMust(NODE, ['ip', 'route', 'add', `${v4(p)}/32`, 'dev', vh]);
    await nsMust(NODE, ['ip', '-6', 'route', 'add', `${v6(p)}/128`, 'dev', vh]);
    // Through p1's veth, not the client's: a packet routed back out the device
    // it came in on makes the node send a redirect first, which uses up the
    // rate limit the REJECT's ICMP error to that client then needs.
    if (p === 'p1') {
      await nsMust(NODE, [...serviceRoute, vh]);
      await nsMust(NODE, ['ip', 'route', 'add', '10.96.0.0/16', 'dev', vh]);
    }
    await nsMust(pod, ['ip', 'link', 'set', 'eth0', 'up']);
    await nsMust(pod, ['ip', 'addr', 'add', `${v4(p)}/32`, 'dev', 'eth0']);
    await nsMust(pod, ['ip', 'route', 'add', '169.254.1.1', 'dev', 'eth0']);
    await nsMust(pod, ['ip', 'route', 'add', 'default', 'via', '169.254.1.1']);
    await nsMust(pod, ['ip', 'addr', 'add', `${v6(p)}/128`, 'dev', 'eth0']);
    await nsMust(pod, ['ip', '-6', 'route', 'add', 'default', 'via', 'fe80::1', 'dev', 'eth0']);
  }
  for (const p of ['p1', 'p2'] as const) {
    const proc = new NsProcess(podNs(p), [process.execPath, '-e', server(p)]);
    ctx.procs.push(proc);
    await proc.waitFor(/ready/, 5000);
  }
  fs.writeFileSync(path.join(ctx.dir, 'manifests.yaml'), MANIFESTS);
  const agent = new NsProcess(NODE, [
    process.execPath,
    CLI,
    'run',
    '--mode',
    MODE,
    // BPF mode: the host-side veths are the pod devices (no external device: clients are pods).
    ...(MODE === 'bpf' ? ['--pod-devices', 'vh*'] : []),
    '--source',
    `file:${ctx.dir}`,
    '--node-name',
    'n1',
    '--bpffs-root',
    ctx.pinRoot,
    '--health-addr',
    '127.0.0.1:0',
    '--metrics-addr',
    '127.0.0.1:0',
    '--node-ips',
    `${NODE_V4},${NODE_V6}`,
    '--cluster-cidr',
    '10.244.0.0/16,fd00:10:244::/56',
  ]);
  ctx.procs.push(agent);
  await agent.waitFor(/"msg":"ready"/, 20_000);
  if (MODE === 'bpf') await agent.waitFor(/("role":"pod"[\s\S]*){3}/, 5000);
});

s.after(async (ctx) => {
  for (const p of ctx.procs) {
    p.child.kill('SIGKILL');
  }
  await Promise.all(ctx.procs.map((p) => waitFor(() => !p.running, { timeoutMs: 5000, what: 'process exit' }).catch(() => undefined)));
  for (const ns of ctx.made) delNetnsSync(ns);
  fs.rmSync(ctx.dir, { recursive: true, force: true });
  fs.rmSync(ctx.pinRoot, { recursive: true, force: true });
});

{
  s('a dual-stack Service answers on both its ClusterIPs at once, each family from its own endpoints, client address kept', async () => {
    const [a, b] = await Promise.all([curl(podNs('c'), 'http://10.96.60.1/'), curl(podNs('c'), 'http://[fd00:96::60:1]/')]);
    assert.is(a.text, `p1 ${v4('c')}`, 'IPv4 ClusterIP: the IPv4 endpoint, the pod address kept');
    assert.is(b.text, `p2 ${v6('c')}`, 'IPv6 ClusterIP: the IPv6 endpoint, the pod address kept');
  });

  s('an IPv6-only Service is served; in iptables and nftables mode a node process reaches it too (nat output)', async () => {
    assert.is((await curl(podNs('c'), 'http://[fd00:96::60:2]/')).text, `p1 ${v6('c')}`);
    if (MODE === 'bpf') return;
    const fromNode = await curl(NODE, 'http://[fd00:96::60:2]/');
    assert.ok(fromNode.ok, fromNode.text);
    assert.match(fromNode.text, /^p1 /);
  });

  s("a NodePort on the node's IPv6 address is served and masqueraded (externalTrafficPolicy Cluster)", async () => {
    const r = await curl(podNs('c'), `http://[${NODE_V6}]:30660/`);
    assert.ok(r.ok, r.text);
    assert.match(r.text, /^p2 /);
    assert.is.not(r.text, `p2 ${v6('c')}`, 'the backend sees the node, not the client');
    const r4 = await curl(podNs('c'), `http://${NODE_V4}:30660/`);
    assert.match(r4.text, /^p1 /);
  });

  s('an IPv6 Service without endpoints is refused as an IPv4 one is, not left to time out', async () => {
    // The connect's own error, as the client's kernel reports it (curl prints one message for every failure).
    const connect = (addr: string): string =>
      `const t=Date.now();require('net').connect(80,'${addr}').on('connect',()=>{console.log('connected');process.exit(0)}).on('error',(e)=>{console.log(e.code+' '+(Date.now()-t));process.exit(0)});setTimeout(()=>{console.log('timeout');process.exit(0)},4000)`;
    for (const addr of ['10.96.60.4', 'fd00:96::60:3']) {
      const out = (await nsMust(podNs('c'), [process.execPath, '-e', connect(addr)], { timeoutMs: 8000 })).trim();
      assert.match(out, /^ECONNREFUSED \d+$/, `${addr}: ${out}`);
      // Refused within a SYN retransmission (DROP would leave it to time out). In
      // iptables mode (ICMPv6 port unreachable) the error can arrive over veths while
      // connect() still holds the socket, and IPv6 TCP then waits for the retransmitted
      // SYN's error (TcpExtLockDroppedIcmps); BPF mode answers with a RST.
      assert.ok(Number(out.split(' ')[1]) < 2500, `${addr}: ${out}`);
    }
  });

  s('healthCheckNodePort of a dual-stack Service counts a local pod once, not once per family', async () => {
    const body = await nsMust(NODE, ['curl', '-sS', '--max-time', '3', 'http://127.0.0.1:32660/healthz']);
    assert.equal(JSON.parse(body), { service: { namespace: 'e2e', name: 'hc' }, localEndpoints: 1, serviceProxyHealthy: true });
  });

  s('BPF mode: the IPv6 flows went through the tc programs (IPv6 verdicts counted), and weir check finds both families consistent', async () => {
    if (MODE !== 'bpf') return;
    const out = await nsMust(NODE, [process.execPath, CLI, 'verdicts', '--bpffs-root', `/sys/fs/bpf/weir-v6-${id}`]);
    const count = (name: string): number => Number(new RegExp(`^\\s*${name.replace('/', '\\/')}\\s+(\\d+)`, 'm').exec(out)?.[1] ?? 0);
    assert.ok(count('forward/ipv6') > 0, out);
    assert.ok(count('reject_no_endpoints/ipv6') > 0, out);
    // And the pinned maps of both families hold every invariant.
    const check = await nsMust(NODE, [process.execPath, CLI, 'check', '--bpffs-root', `/sys/fs/bpf/weir-v6-${id}`]);
    assert.match(check, /^consistent/, check);
  });

  s('weir services lists the IPv6 frontends read back from ip6tables (iptables mode) or table inet weir (nftables mode)', async () => {
    if (MODE === 'bpf') return;
    const out = await nsMust(NODE, [process.execPath, CLI, 'services', '--bpffs-root', `/sys/fs/bpf/weir-v6-${id}`]);
    assert.match(out, /fd00:96::60:1\]?:80\/TCP .*1 backend/);
    assert.match(out, /fd00:96::60:3\]?:80\/TCP .*no endpoints: reject/);
    assert.match(out, /10\.96\.60\.1:80\/TCP .*1 backend/);
  });
}

s.run();
