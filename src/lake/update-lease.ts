import type { LakeState } from "../state/lake-state.js";
import type { UpdateKind } from "./models.js";

/** Node runs a longer timer at once (and warns): a lease of months is renewed every 24.8 days. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function deadline(leaseMs: number): string {
  return new Date(Date.now() + leaseMs).toISOString();
}

/**
 * An update being written, kept alive in the state store: its writer renews it every third of the lease, so a
 * writer that dies (killed, its machine gone) is known for dead one lease later by any process sharing the
 * state, while a slow writer is never taken for dead however long it writes.
 */
export class UpdateLease {
  private readonly timer: NodeJS.Timeout;

  private constructor(
    state: LakeState,
    dataset: string,
    readonly update: string,
    leaseMs: number,
  ) {
    // A renewal that fails or comes too late lets another writer abandon the update; its commit then refuses
    // it with a message saying so, and nothing half-written is ever read.
    this.timer = setInterval(
      () => {
        state.renewUpdate(dataset, update, deadline(leaseMs)).then(
          (held) => held || this.end(),
          () => {},
        );
      },
      Math.min(leaseMs / 3, MAX_TIMER_MS),
    );
    this.timer.unref();
  }

  /** Begins an update of a dataset (see LakeState.beginUpdate) and keeps it alive until `end`. */
  static async begin(
    state: LakeState,
    dataset: string,
    kind: UpdateKind,
    createdBy: string,
    run: string | null,
    leaseMs: number,
  ): Promise<UpdateLease> {
    const update = await state.beginUpdate(dataset, kind, createdBy, { aliveUntil: deadline(leaseMs), run });
    return new UpdateLease(state, dataset, update, leaseMs);
  }

  end(): void {
    clearInterval(this.timer);
  }
}
