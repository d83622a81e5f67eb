import type { Dataset, Grant, Permission } from "./models.js";

/** Who is asking: a user, their roles, and every grant to them or to those roles. */
export interface Principal {
  user: string;
  roles: readonly string[];
  grants: readonly Grant[];
  /** The workspace operator may do everything. */
  operator?: boolean;
}

/**
 * The one access rule: the operator and a dataset's owner may do anything with it; otherwise a grant to the
 * user or one of their roles must cover the permission (write includes read) and name the dataset, or name
 * its tier, except that a sensitive dataset is only ever opened by a grant naming it.
 */
export function canAccess(
  principal: Principal,
  dataset: Pick<Dataset, "name" | "owner" | "tier">,
  permission: Permission,
): boolean {
  if (principal.operator || dataset.owner === principal.user) return true;
  return principal.grants.some((grant) => {
    const mine =
      (grant.principalKind === "user" && grant.principal === principal.user) ||
      (grant.principalKind === "role" && principal.roles.includes(grant.principal));
    if (!mine) return false;
    if (permission === "write" && grant.permission !== "write") return false;
    if (grant.targetKind === "dataset") return grant.target === dataset.name;
    return grant.target === dataset.tier && dataset.tier !== "sensitive";
  });
}
