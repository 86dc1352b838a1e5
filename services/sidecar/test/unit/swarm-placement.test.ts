import { describe, expect, it } from "vitest";
import { nodeFacts, pickNode, satisfies, type NodeFacts } from "../../src/runners/swarm-placement.js";

const node = (id: string, over: Partial<NodeFacts> = {}): NodeFacts => ({
  id,
  hostname: `host-${id}`,
  role: "worker",
  os: "linux",
  arch: "x86_64",
  labels: {},
  engineLabels: {},
  usable: true,
  ...over,
});

describe("RUNNER_PLACEMENT constraints", () => {
  it("compare node attributes and labels, == and !=, case-insensitively", () => {
    const n = node("a1", { hostname: "Alpha", role: "manager", labels: { "open-persona.runners": "true" }, engineLabels: { disk: "ssd" } });
    expect(satisfies(n, "node.hostname==alpha")).toBe(true);
    expect(satisfies(n, "node.role!=manager")).toBe(false);
    expect(satisfies(n, "node.labels.open-persona.runners==true")).toBe(true);
    expect(satisfies(n, "engine.labels.disk == ssd")).toBe(true);
    expect(satisfies(n, "node.id==a1")).toBe(true);
    expect(satisfies(n, "node.platform.os==windows")).toBe(false);
  });

  it("a label the node lacks never equals (and so always differs)", () => {
    expect(satisfies(node("b"), "node.labels.gpu==true")).toBe(false);
    expect(satisfies(node("b"), "node.labels.gpu!=true")).toBe(true);
  });
});

describe("pickNode", () => {
  it("takes the usable node that fits every constraint and holds the fewest runners", () => {
    const nodes = [node("a", { labels: { runners: "yes" } }), node("b", { labels: { runners: "yes" } }), node("c"), node("d", { labels: { runners: "yes" }, usable: false })];
    const load = new Map([
      ["a", 3],
      ["b", 1],
      ["c", 0],
    ]);
    expect(pickNode(nodes, ["node.labels.runners==yes"], load)?.id).toBe("b");
    expect(pickNode(nodes, [], load)?.id).toBe("c");
    // Ties go to the lowest id, so two replicas deciding alike pick alike.
    expect(pickNode([node("z"), node("y")], [], new Map())?.id).toBe("y");
  });

  it("finds nothing when no ready, active node fits", () => {
    expect(pickNode([node("a", { usable: false })], [], new Map())).toBeUndefined();
    expect(pickNode([node("a")], ["node.role==manager"], new Map())).toBeUndefined();
  });
});

describe("nodeFacts", () => {
  it("reads what the engine reports: usable only when ready and active", () => {
    const raw = {
      ID: "n1",
      Spec: { Role: "worker", Availability: "drain", Labels: { x: "1" } },
      Description: { Hostname: "w1", Platform: { OS: "linux", Architecture: "aarch64" }, Engine: { Labels: { e: "2" } } },
      Status: { State: "ready" },
    };
    expect(nodeFacts(raw)).toEqual({ id: "n1", hostname: "w1", role: "worker", os: "linux", arch: "aarch64", labels: { x: "1" }, engineLabels: { e: "2" }, usable: false });
    expect(nodeFacts({ ...raw, Spec: { ...raw.Spec, Availability: "active" } }).usable).toBe(true);
    expect(nodeFacts({ ...raw, Spec: { ...raw.Spec, Availability: "active" }, Status: { State: "down" } }).usable).toBe(false);
  });
});
