import { isLosslessNumber, parse, stringify } from "lossless-json";
import { documentProblem } from "../relationalize/relationalize.js";

export interface DateParts {
  year: number;
  month: number;
  day: number;
}

/** A document that cannot carry the partition fields (for example an array of numbers). */
export class DocumentShapeError extends Error {
  override name = "DocumentShapeError";
}

/** The reference's output file name: Glue ignores names starting with `_` or `.`, so those get a `0` prefix. */
export function datasetFileName(recordId: string): string {
  const name = `${recordId}.ndjson`;
  return name.startsWith("_") || name.startsWith(".") ? `0${name}` : name;
}

/** `dataset=<id>/assessmentid=<a>/year=<Y>/month=<M>/day=<D>/<recordid>.ndjson`, date parts unpadded. */
export function datasetKey(datasetId: string, assessmentId: string, date: DateParts, recordId: string): string {
  return [
    `dataset=${datasetId}`,
    `assessmentid=${assessmentId}`,
    `year=${date.year}`,
    `month=${date.month}`,
    `day=${date.day}`,
    datasetFileName(recordId),
  ].join("/");
}

/** True for the dataset that holds each archive's own metadata.json (the reference tests the id's prefix). */
export function isArchiveMetadataDataset(datasetId: string): boolean {
  return datasetId.split("_")[0] === "ArchiveMetadata";
}

export interface LineContext {
  datasetId: string;
  recordId: string;
  assessmentId: string;
  date: DateParts;
  /** Every upload-metadata field, for the ArchiveMetadata dataset. */
  uploadMetadata: Readonly<Record<string, string>>;
}

/**
 * One NDJSON line for a dataset: the document with its partition fields added (to each element of a
 * top-level array). Numbers keep their exact text (`1.0` stays a float, `0.59999999999999998` keeps its
 * digits), so later stages can infer types and rebuild documents faithfully.
 */
export function datasetLine(text: string, ctx: LineContext): string {
  const doc = parse(text) as unknown;
  if (isArchiveMetadataDataset(ctx.datasetId)) {
    if (!isObject(doc)) throw new DocumentShapeError("an archive metadata document must be a JSON object");
    Object.assign(doc, ctx.date, ctx.uploadMetadata);
  } else {
    const fields = {
      assessmentid: ctx.assessmentId,
      year: ctx.date.year,
      month: ctx.date.month,
      day: ctx.date.day,
      recordid: ctx.recordId,
    };
    const problem = documentProblem(doc);
    if (problem !== undefined) throw new DocumentShapeError(problem);
    for (const element of Array.isArray(doc) ? doc : [doc]) Object.assign(element, fields);
  }
  return stringify(doc) as string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value) && !isLosslessNumber(value);
}
