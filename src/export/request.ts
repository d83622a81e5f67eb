import { z } from "zod";
import { SharingMode } from "./filter.js";

const TableKey = z.object({ studyId: z.string().min(1), schemaId: z.string().min(1), revision: z.number().int() });

/** The record sources a request can name; it must name exactly one. */
export const RECORD_SOURCES = ["date", "startDateTime", "sinceLastExport", "recordIds"] as const;

/**
 * An export request (CLI flags or a JSON file). Exactly one record source: an upload `date` (YYYY-MM-DD, in the
 * configured time zone), a `startDateTime`/`endDateTime` window, `sinceLastExport`, or `recordIds` (a redrive of
 * exactly those records).
 */
export const ExportRequest = z
  .object({
    date: z.iso.date().optional(),
    startDateTime: z.iso.datetime({ offset: true }).optional(),
    endDateTime: z.iso.datetime({ offset: true }).optional(),
    sinceLastExport: z.literal(true).optional(),
    recordIds: z.array(z.string().min(1)).min(1, "must list at least one record id").optional(),
    sharingMode: SharingMode.default("SHARED"),
    studyWhitelist: z.array(z.string().min(1)).min(1, "must name at least one study when given").optional(),
    tableWhitelist: z.array(TableKey).min(1, "must name at least one table when given").optional(),
    tag: z.string().default("(no tag)"),
    /** How many times these records were redriven already (automatic redrives stop at a configured count). */
    redriveCount: z.number().int().min(0).default(0),
    destination: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((request, ctx) => {
    const named = RECORD_SOURCES.filter((source) => request[source] !== undefined);
    if (named.length !== 1) {
      ctx.addIssue({
        code: "custom",
        path: [named[1] ?? "date"],
        message:
          named.length === 0
            ? `name one record source: ${RECORD_SOURCES.join(", ")}`
            : `names ${named.join(" and ")}: a request takes exactly one record source`,
      });
    }
    if (request.startDateTime !== undefined && request.endDateTime === undefined) {
      ctx.addIssue({ code: "custom", path: ["endDateTime"], message: "is required with startDateTime" });
    }
    if (
      request.endDateTime !== undefined &&
      request.startDateTime === undefined &&
      request.sinceLastExport === undefined
    ) {
      ctx.addIssue({ code: "custom", path: ["endDateTime"], message: "goes with startDateTime or sinceLastExport" });
    }
    if (
      request.startDateTime &&
      request.endDateTime &&
      Date.parse(request.startDateTime) >= Date.parse(request.endDateTime)
    ) {
      ctx.addIssue({ code: "custom", path: ["startDateTime"], message: "must be before endDateTime" });
    }
  });
export type ExportRequest = z.infer<typeof ExportRequest>;

export class ExportRequestError extends Error {
  override name = "ExportRequestError";
}

/** Validates a request; a malformed or self-contradictory one is refused with a message naming the field. */
export function parseExportRequest(input: unknown): ExportRequest {
  const parsed = ExportRequest.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue?.path.join(".") || "(request)";
  throw new ExportRequestError(`export request: ${field}: ${issue?.message ?? "invalid"}`);
}
