import { z } from "zod";

/** An id that becomes a folder or file name: no separators, no `..`, nothing a shell or Hive path would mangle. */
export const SafeId = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9_.~-]+$/, "may hold only letters, digits and _ . ~ -")
  .refine((s) => s !== "." && s !== "..", "may not be '.' or '..'");
