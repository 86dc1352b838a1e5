/**
 * Which Swarm node a new user's runner is pinned to. Swarm would place a service by itself,
 * but a runner's workspace and opencode database are node-local volumes: once placed, the
 * runner must come back to the same node (after a crash, an idle stop, a spec change), so the
 * sidecar picks the node once and writes it into the service as `node.id==<id>`.
 *
 * The pick obeys RUNNER_PLACEMENT (the same constraint syntax Swarm uses, evaluated here over
 * the attributes a node reports) and spreads users: the ready, active node holding the fewest
 * runners wins.
 */
export interface NodeFacts {
  id: string;
  hostname: string;
  role: string;
  os: string;
  arch: string;
  labels: Record<string, string>;
  engineLabels: Record<string, string>;
  /** Ready and active: Swarm may place tasks on it. */
  usable: boolean;
}

/** A node as the engine's API describes it (the fields used here). */
export interface SwarmNode {
  ID?: string;
  Spec?: { Role?: string; Availability?: string; Labels?: Record<string, string> };
  Description?: { Hostname?: string; Platform?: { OS?: string; Architecture?: string }; Engine?: { Labels?: Record<string, string> } };
  Status?: { State?: string };
}

export function nodeFacts(node: SwarmNode): NodeFacts {
  return {
    id: node.ID ?? "",
    hostname: node.Description?.Hostname ?? "",
    role: node.Spec?.Role ?? "",
    os: node.Description?.Platform?.OS ?? "",
    arch: node.Description?.Platform?.Architecture ?? "",
    labels: node.Spec?.Labels ?? {},
    engineLabels: node.Description?.Engine?.Labels ?? {},
    usable: node.Status?.State === "ready" && node.Spec?.Availability === "active",
  };
}

/** Whether a node satisfies one constraint (`attr==value` or `attr!=value`; config.ts checked the form). */
export function satisfies(node: NodeFacts, constraint: string): boolean {
  const m = /^\s*([\w.-]+)\s*(==|!=)\s*(.+?)\s*$/.exec(constraint);
  if (!m) return false;
  const [, attr, op, want] = m as unknown as [string, string, "==" | "!=", string];
  const value = attribute(node, attr);
  // Swarm compares node attributes case-insensitively; a missing label never equals.
  const equal = value !== undefined && value.toLowerCase() === want.toLowerCase();
  return op === "==" ? equal : !equal;
}

function attribute(node: NodeFacts, attr: string): string | undefined {
  if (attr.startsWith("node.labels.")) return node.labels[attr.slice("node.labels.".length)];
  if (attr.startsWith("engine.labels.")) return node.engineLabels[attr.slice("engine.labels.".length)];
  switch (attr) {
    case "node.id":
      return node.id;
    case "node.hostname":
      return node.hostname;
    case "node.role":
      return node.role;
    case "node.platform.os":
      return node.os;
    case "node.platform.arch":
      return node.arch;
    default:
      return undefined;
  }
}

/**
 * The node for a new runner: usable, satisfying every constraint, holding the fewest runners
 * (`load`: runners per node id); undefined when no node qualifies.
 */
export function pickNode(nodes: NodeFacts[], constraints: string[], load: Map<string, number>): NodeFacts | undefined {
  const fit = nodes.filter((n) => n.usable && constraints.every((c) => satisfies(n, c)));
  fit.sort((a, b) => (load.get(a.id) ?? 0) - (load.get(b.id) ?? 0) || a.id.localeCompare(b.id));
  return fit[0];
}
