/**
 * The users of one docker test run, and the engine objects their runners leave: each suite
 * names its users `<name>-<run>@example.com` and removes, at the end, every container, data
 * volume and network those users got (networks by the run's RUNNER_NETWORK prefix).
 */
import Docker from "dockerode";
import { DockerRunner, LABEL_USER } from "../../src/runners/docker-runner.js";
import { userHash } from "../../src/workspace/user-space.js";

export class DockerTestUsers {
  private readonly ids: string[] = [];

  constructor(
    private readonly docker: Docker,
    private readonly run: string,
    /** The suite's RUNNER_NETWORK: user networks are `<network>-<hash>`. */
    private readonly network: string,
  ) {}

  /** A new user id of this run (remembered for the clean-up). */
  user(name: string): string {
    return this.track(`${name}-${this.run}@example.com`);
  }

  /** A user id made elsewhere (e.g. by Open WebUI) whose runner this suite starts. */
  track(userId: string): string {
    this.ids.push(userId);
    return userId;
  }

  /** The user's runner containers, running or not (one at most, unless something is wrong). */
  containersOf(userId: string): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({ all: true, filters: { label: [`${LABEL_USER}=${userHash(userId)}`] } });
  }

  /**
   * Removes the users' containers, volumes and networks. Every step on its own: one failing
   * (the engine gone) must not leave the others behind.
   */
  async removeAll(): Promise<void> {
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (e) {
        if ((e as { statusCode?: number }).statusCode !== 404) console.warn(`cleanup: ${what}: ${(e as Error).message}`);
      }
    };
    for (const id of this.ids) {
      await step(`containers of ${id}`, async () => {
        for (const c of await this.containersOf(id)) await this.docker.getContainer(c.Id).remove({ force: true });
      });
      await step(`volume of ${id}`, () => this.docker.getVolume(DockerRunner.volumeName(userHash(id))).remove());
    }
    await step("networks", async () => {
      for (const n of await this.docker.listNetworks()) if (n.Name.startsWith(this.network)) await this.docker.getNetwork(n.Id).remove();
    });
  }
}
