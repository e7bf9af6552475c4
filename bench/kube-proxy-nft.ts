/**
 * The peer the wire benchmark compares weir with: a ruleset in the shape
 * kube-proxy's nftables mode programs (pkg/proxy/nftables), loaded with
 * `nft -f`. The same table, hooks and priorities, verdict maps from
 * service address to a chain per service, `numgen random` to a chain per
 * endpoint that DNATs, the masquerade mark, and the filter chains that
 * every new connection crosses (no-endpoint services, cluster-IP checks,
 * firewall). Written for IPv4 ClusterIP services with TCP ports, which is
 * all the benchmark serves; chain names are short, which changes no lookup.
 */

export interface PeerService {
  readonly vip: string;
  readonly port: number;
  /** Backend addresses and their target port. */
  readonly endpoints: ReadonlyArray<{ addr: string; port: number }>;
}

export interface PeerOptions {
  /** Traffic from outside it is masqueraded (kube-proxy's --cluster-cidr). */
  readonly clusterCidr: string;
  /** The service CIDR: traffic to an unallocated ClusterIP is dropped. */
  readonly serviceCidr: string;
}

/** The whole table, as one `nft -f` script (it replaces an older one). */
export function kubeProxyNftRuleset(services: readonly PeerService[], o: PeerOptions): string {
  const out: string[] = [];
  const w = (line: string): number => out.push(line);
  w('add table ip kube-proxy');
  w('delete table ip kube-proxy');
  w('table ip kube-proxy {');
  w('  set cluster-ips { type ipv4_addr; }');
  w('  set nodeport-ips { type ipv4_addr; }');
  w('  map no-endpoint-services { type ipv4_addr . inet_proto . inet_service : verdict; }');
  w('  map no-endpoint-nodeports { type inet_proto . inet_service : verdict; }');
  w('  map firewall-ips { type ipv4_addr . inet_proto . inet_service : verdict; }');
  w('  map service-ips { type ipv4_addr . inet_proto . inet_service : verdict; }');
  w('  map service-nodeports { type inet_proto . inet_service : verdict; }');
  w('  chain filter-prerouting { type filter hook prerouting priority dstnat - 10; policy accept; ct state new jump firewall-check; }');
  w('  chain filter-input { type filter hook input priority -110; policy accept; ct state new jump nodeport-endpoints-check; ct state new jump service-endpoints-check; }');
  w('  chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump cluster-ips-check; }');
  w('  chain filter-output { type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; ct state new jump firewall-check; }');
  w('  chain filter-output-post-dnat { type filter hook output priority -90; policy accept; ct state new jump cluster-ips-check; }');
  w('  chain nat-prerouting { type nat hook prerouting priority dstnat; policy accept; jump services; }');
  w('  chain nat-output { type nat hook output priority -100; policy accept; jump services; }');
  w('  chain nat-postrouting { type nat hook postrouting priority srcnat; policy accept; jump masquerading; }');
  w(`  chain cluster-ips-check { ip daddr @cluster-ips reject; ip daddr ${o.serviceCidr} drop; }`);
  w('  chain firewall-check { ip daddr . meta l4proto . th dport vmap @firewall-ips; }');
  w('  chain mark-for-masquerade { mark set mark or 0x4000; }');
  w('  chain masquerading { mark and 0x4000 == 0 return; mark set mark xor 0x4000; masquerade fully-random; }');
  w('  chain nodeport-endpoints-check { ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports; }');
  w('  chain service-endpoints-check { ip daddr . meta l4proto . th dport vmap @no-endpoint-services; }');
  w('  chain services { ip daddr . meta l4proto . th dport vmap @service-ips; fib daddr type local ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports; }');
  w('}');
  services.forEach((s, i) => {
    const eps = s.endpoints.map((_, j) => `endpoint-${i}-${j}`);
    for (const [j, ep] of s.endpoints.entries()) {
      w(`add chain ip kube-proxy ${eps[j]!}`);
      w(`add rule ip kube-proxy ${eps[j]!} ip saddr ${ep.addr} jump mark-for-masquerade`);
      w(`add rule ip kube-proxy ${eps[j]!} meta l4proto tcp dnat to ${ep.addr}:${ep.port}`);
    }
    const chain = `service-${i}`;
    w(`add chain ip kube-proxy ${chain}`);
    w(`add rule ip kube-proxy ${chain} ip daddr ${s.vip} tcp dport ${s.port} ip saddr != ${o.clusterCidr} jump mark-for-masquerade`);
    if (eps.length) w(`add rule ip kube-proxy ${chain} numgen random mod ${eps.length} vmap { ${eps.map((e, j) => `${j} : goto ${e}`).join(', ')} }`);
    w(`add element ip kube-proxy cluster-ips { ${s.vip} }`);
    w(`add element ip kube-proxy service-ips { ${s.vip} . tcp . ${s.port} : goto ${chain} }`);
  });
  return out.join('\n') + '\n';
}
