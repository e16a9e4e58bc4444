//! The permission policy: one pure function, tested as a table.
//!
//! - `admin` does everything inside its tenant.
//! - `supervisor` creates projects (becoming a member), manages the projects it
//!   belongs to and their members, and may list the tenant's users to pick members.
//! - `empleado` sees the projects it belongs to and uploads to them.
//! - `viewer` only reads the projects it belongs to.
//!
//! A project the actor may not even read answers "not visible" (404 outside),
//! so membership of other projects does not leak; a visible project with an
//! action the role lacks answers "forbidden" (403).

use crate::model::Role;

/// Tenant-wide actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantAction {
    /// Create users, change their role, name or disabled flag.
    ManageUsers,
    /// List the tenant's users and read any of them.
    ReadUsers,
    CreateProject,
    /// See every project of the tenant, member or not.
    ReadAllProjects,
    /// See the tenant's processing jobs and their errors, retry dead ones.
    ManageJobs,
}

/// Actions on one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectAction {
    Read,
    /// Rename, change code or address, archive.
    Manage,
    ManageMembers,
    Upload,
}

/// Why the policy said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The actor may not know the target exists.
    NotVisible,
    /// The actor sees the target but its role lacks the action.
    Forbidden,
}

pub fn tenant_allows(role: Role, action: TenantAction) -> bool {
    use TenantAction::*;
    match role {
        Role::Admin => true,
        Role::Supervisor => matches!(action, ReadUsers | CreateProject),
        Role::Empleado | Role::Viewer => false,
    }
}

/// `is_member`: whether the actor belongs to the project.
pub fn project_allows(role: Role, is_member: bool, action: ProjectAction) -> Result<(), Denied> {
    use ProjectAction::*;
    if role == Role::Admin {
        return Ok(());
    }
    if !is_member {
        return Err(Denied::NotVisible);
    }
    let allowed = match role {
        Role::Admin => true,
        Role::Supervisor => true,
        Role::Empleado => matches!(action, Read | Upload),
        Role::Viewer => matches!(action, Read),
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProjectAction as P;
    use Role::*;
    use TenantAction as T;

    #[test]
    fn tenant_table() {
        // role, [ManageUsers, ReadUsers, CreateProject, ReadAllProjects, ManageJobs]
        let table = [
            (Admin, [true, true, true, true, true]),
            (Supervisor, [false, true, true, false, false]),
            (Empleado, [false, false, false, false, false]),
            (Viewer, [false, false, false, false, false]),
        ];
        let actions = [
            T::ManageUsers,
            T::ReadUsers,
            T::CreateProject,
            T::ReadAllProjects,
            T::ManageJobs,
        ];
        for (role, expected) in table {
            for (action, want) in actions.iter().zip(expected) {
                assert_eq!(tenant_allows(role, *action), want, "{role} {action:?}");
            }
        }
    }

    #[test]
    fn project_table() {
        const OK: Result<(), Denied> = Ok(());
        const HIDDEN: Result<(), Denied> = Err(Denied::NotVisible);
        const NO: Result<(), Denied> = Err(Denied::Forbidden);
        // role, member, [Read, Manage, ManageMembers, Upload]
        let table = [
            (Admin, true, [OK, OK, OK, OK]),
            (Admin, false, [OK, OK, OK, OK]),
            (Supervisor, true, [OK, OK, OK, OK]),
            (Supervisor, false, [HIDDEN, HIDDEN, HIDDEN, HIDDEN]),
            (Empleado, true, [OK, NO, NO, OK]),
            (Empleado, false, [HIDDEN, HIDDEN, HIDDEN, HIDDEN]),
            (Viewer, true, [OK, NO, NO, NO]),
            (Viewer, false, [HIDDEN, HIDDEN, HIDDEN, HIDDEN]),
        ];
        let actions = [P::Read, P::Manage, P::ManageMembers, P::Upload];
        for (role, member, expected) in table {
            for (action, want) in actions.iter().zip(expected) {
                assert_eq!(
                    project_allows(role, member, *action),
                    want,
                    "{role} member={member} {action:?}"
                );
            }
        }
    }
}
