import { RelationalizeStage } from "../parquet/stage.js";
import type { Workspace } from "../workspace/workspace.js";
import { Lake } from "./lake.js";

export interface WithdrawalReport {
  participant: string;
  /** Lake datasets that got an update without the participant's rows. */
  updates: Array<{ dataset: string; update: string; removed: number }>;
  /** JSON documents of the participant's records that were deleted. */
  documentsDeleted: number;
  /** JSON datasets relationalized again, so that their Parquet tables lose the records too. */
  relationalized: string[];
}

/**
 * A participant withdraws, everywhere studylake serves data: their sharing scope becomes NO_SHARING, their
 * uploads' status `withdrawn` (no export selects them, whatever its sharing mode; intake writes nothing of
 * their later uploads), the lake removes and hides their rows (see `Lake.withdraw`), their records' JSON
 * documents are deleted, and the datasets those were in are relationalized again, which takes the records out
 * of the Parquet tables. The raw archives are kept, as every raw upload is.
 */
export async function withdrawParticipant(ws: Workspace, participant: string): Promise<WithdrawalReport> {
  const lake = new Lake(ws);
  const updates = await lake.withdraw(participant, await lake.principal());
  const recordIds = await ws.state.exports.recordsOf([participant]);
  const records = recordIds.length > 0 ? await ws.state.exports.records({ recordIds }) : [];
  const datasets = new Set<string>();
  let documentsDeleted = 0;
  for (const record of records) {
    // No export, in any sharing mode, selects an upload that is not valid.
    await ws.state.setStatus(record.uploadId, "withdrawn");
    for (const doc of record.documents) {
      await ws.json.delete(doc.key);
      datasets.add(doc.datasetId);
      documentsDeleted++;
    }
  }
  const stage = new RelationalizeStage(ws);
  const known = new Set(await stage.datasets());
  const relationalized = [...datasets].filter((d) => known.has(d)).sort();
  for (const dataset of relationalized) await stage.run(dataset);
  return { participant, updates, documentsDeleted, relationalized };
}
