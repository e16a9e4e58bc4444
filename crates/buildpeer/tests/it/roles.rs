//! The permission policy over HTTP, on SQLite and PostgreSQL: for each role
//! (admin, supervisor, empleado, viewer) every route is called and must be
//! allowed (2xx) or refused exactly as `buildpeer_core::policy` and the
//! use-cases say: 403 for a visible target the role may not act on, 404 for
//! a project the caller may not even see. Also: an admin cannot demote or
//! disable itself (422), and a role change applies to tokens already issued.

use crate::common;

use std::collections::BTreeSet;

use common::{Backend, TestApp, TestTenant, TestUser};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

scenarios!(
    admin_may_do_everything,
    supervisor_manages_its_own_projects,
    empleado_sees_only_member_projects,
    viewer_only_reads_member_projects,
    admin_cannot_demote_or_disable_itself,
    role_changes_apply_to_existing_tokens,
);

/// A tenant with one user of each role and three projects: one whose
/// members are the supervisor, empleado and viewer, one without members,
/// and one created by the supervisor.
struct World {
    app: TestApp,
    acme: TestTenant,
    supervisor: TestUser,
    empleado: TestUser,
    viewer: TestUser,
    /// An empleado that is nobody's member: the target of user and membership changes.
    target: TestUser,
    member_project: Uuid,
    hidden_project: Uuid,
    supervisor_project: Uuid,
}

async fn world(backend: Backend) -> World {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let supervisor = app.create_user(&acme, "supervisor").await;
    let empleado = app.create_user(&acme, "empleado").await;
    let viewer = app.create_user(&acme, "viewer").await;
    let target = app.create_user(&acme, "empleado").await;
    let admin = acme.admin.token();
    let member_project = app.create_project(admin, "Torre Norte").await;
    for u in [&supervisor, &empleado, &viewer] {
        app.add_member(admin, member_project, u.id).await;
    }
    let hidden_project = app.create_project(admin, "Bodega Sur").await;
    let supervisor_project = app.create_project(supervisor.token(), "Plaza Centro").await;
    World {
        app,
        acme,
        supervisor,
        empleado,
        viewer,
        target,
        member_project,
        hidden_project,
        supervisor_project,
    }
}

/// Calls a route as `who` and asserts the outcome.
async fn expect(
    app: &TestApp,
    who: &TestUser,
    method: Method,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Value {
    let resp = app
        .call(method, path, Some(who.token()), body.as_ref())
        .await;
    resp.assert_outcome(status);
    if resp.text.is_empty() {
        Value::Null
    } else {
        resp.json()
    }
}

async fn visible_projects(app: &TestApp, who: &TestUser) -> BTreeSet<Uuid> {
    let body = expect(app, who, Method::GET, "/v1/projects", None, 200).await;
    common::ids(body["items"].as_array().unwrap(), "id")
        .into_iter()
        .collect()
}

fn new_user(app: &TestApp, role: &str) -> Value {
    json!({
        "email": format!("new{}@acme.test", app.next_n()),
        "password": common::PASSWORD,
        "name": "Nuevo",
        "role": role,
    })
}

async fn admin_may_do_everything(backend: Backend) {
    let w = world(backend).await;
    let (app, admin) = (&w.app, &w.acme.admin);
    let (m, h, s, t) = (
        w.member_project,
        w.hidden_project,
        w.supervisor_project,
        w.target.id,
    );

    expect(app, admin, Method::GET, "/v1/me", None, 200).await;
    let users = expect(app, admin, Method::GET, "/v1/users", None, 200).await;
    assert_eq!(users["items"].as_array().unwrap().len(), 5);
    for role in common::ROLES {
        let u = expect(
            app,
            admin,
            Method::POST,
            "/v1/users",
            Some(new_user(app, role)),
            201,
        )
        .await;
        assert_eq!(u["role"], role);
    }
    for id in [admin.id, w.supervisor.id, t] {
        expect(
            app,
            admin,
            Method::GET,
            &format!("/v1/users/{id}"),
            None,
            200,
        )
        .await;
    }
    let patched = expect(
        app,
        admin,
        Method::PATCH,
        &format!("/v1/users/{t}"),
        Some(json!({ "name": "Renamed", "role": "viewer" })),
        200,
    )
    .await;
    assert_eq!(
        (&patched["name"], &patched["role"]),
        (&json!("Renamed"), &json!("viewer"))
    );

    // Every project of the tenant, member or not.
    let created = expect(
        app,
        admin,
        Method::POST,
        "/v1/projects",
        Some(json!({ "name": "Nuevo" })),
        201,
    )
    .await;
    let created = common::uuid(&created["id"]);
    let all: BTreeSet<Uuid> = [m, h, s, created].into_iter().collect();
    assert_eq!(visible_projects(app, admin).await, all);
    // Creating does not make an admin a member.
    let members = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/projects/{created}/members"),
        None,
        200,
    )
    .await;
    assert_eq!(members["items"], json!([]));
    for p in [m, h, s] {
        expect(
            app,
            admin,
            Method::GET,
            &format!("/v1/projects/{p}"),
            None,
            200,
        )
        .await;
        expect(
            app,
            admin,
            Method::PATCH,
            &format!("/v1/projects/{p}"),
            Some(json!({ "address": "Av. Reforma 1" })),
            200,
        )
        .await;
        expect(
            app,
            admin,
            Method::GET,
            &format!("/v1/projects/{p}/members"),
            None,
            200,
        )
        .await;
        let member = format!("/v1/projects/{p}/members/{t}");
        expect(app, admin, Method::PUT, &member, None, 201).await;
        expect(app, admin, Method::PUT, &member, None, 204).await;
        expect(app, admin, Method::DELETE, &member, None, 204).await;
        expect(app, admin, Method::DELETE, &member, None, 204).await;
    }
    expect(
        app,
        admin,
        Method::DELETE,
        &format!("/v1/projects/{created}"),
        None,
        204,
    )
    .await;
    let archived = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/projects/{created}"),
        None,
        200,
    )
    .await;
    assert_eq!(archived["archived"], true);
}

async fn supervisor_manages_its_own_projects(backend: Backend) {
    let w = world(backend).await;
    let (app, sup) = (&w.app, &w.supervisor);
    let (m, h, s, t) = (
        w.member_project,
        w.hidden_project,
        w.supervisor_project,
        w.target.id,
    );

    // Users: may list and read, not create or change (not even itself).
    expect(app, sup, Method::GET, "/v1/me", None, 200).await;
    expect(app, sup, Method::GET, "/v1/users", None, 200).await;
    for id in [w.acme.admin.id, sup.id, t] {
        expect(app, sup, Method::GET, &format!("/v1/users/{id}"), None, 200).await;
    }
    expect(
        app,
        sup,
        Method::POST,
        "/v1/users",
        Some(new_user(app, "empleado")),
        403,
    )
    .await;
    for id in [t, sup.id] {
        expect(
            app,
            sup,
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(json!({ "name": "X" })),
            403,
        )
        .await;
    }

    // The project it created at set-up lists it as a member and creator.
    let project = expect(
        app,
        sup,
        Method::GET,
        &format!("/v1/projects/{s}"),
        None,
        200,
    )
    .await;
    assert_eq!(common::uuid(&project["created_by"]), sup.id);
    let members = expect(
        app,
        sup,
        Method::GET,
        &format!("/v1/projects/{s}/members"),
        None,
        200,
    )
    .await;
    assert_eq!(
        common::ids(members["items"].as_array().unwrap(), "user_id"),
        vec![sup.id]
    );
    let created = expect(
        app,
        sup,
        Method::POST,
        "/v1/projects",
        Some(json!({ "name": "Otra" })),
        201,
    )
    .await;
    let created = common::uuid(&created["id"]);

    // Sees its projects only.
    let mine: BTreeSet<Uuid> = [m, s, created].into_iter().collect();
    assert_eq!(visible_projects(app, sup).await, mine);

    // Manages the projects it belongs to, and their members.
    for p in [m, s, created] {
        expect(
            app,
            sup,
            Method::PATCH,
            &format!("/v1/projects/{p}"),
            Some(json!({ "name": "Renombrado" })),
            200,
        )
        .await;
        let member = format!("/v1/projects/{p}/members/{t}");
        expect(app, sup, Method::PUT, &member, None, 201).await;
        expect(app, sup, Method::PUT, &member, None, 204).await;
        expect(app, sup, Method::DELETE, &member, None, 204).await;
    }
    expect(
        app,
        sup,
        Method::DELETE,
        &format!("/v1/projects/{created}"),
        None,
        204,
    )
    .await;

    // Another's project is invisible: 404 for every route, as if absent.
    let hidden = [
        (Method::GET, format!("/v1/projects/{h}"), None),
        (
            Method::PATCH,
            format!("/v1/projects/{h}"),
            Some(json!({ "name": "X" })),
        ),
        (Method::DELETE, format!("/v1/projects/{h}"), None),
        (Method::GET, format!("/v1/projects/{h}/members"), None),
        (Method::PUT, format!("/v1/projects/{h}/members/{t}"), None),
        (
            Method::DELETE,
            format!("/v1/projects/{h}/members/{t}"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/projects/{h}/members/{}", sup.id),
            None,
        ),
    ];
    for (method, path, body) in hidden {
        expect(app, sup, method, &path, body, 404).await;
    }
    // ... and untouched.
    let admin = &w.acme.admin;
    let p = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/projects/{h}"),
        None,
        200,
    )
    .await;
    assert_eq!(
        (&p["name"], &p["archived"]),
        (&json!("Bodega Sur"), &json!(false))
    );
    let members = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/projects/{h}/members"),
        None,
        200,
    )
    .await;
    assert_eq!(members["items"], json!([]));
}

async fn empleado_sees_only_member_projects(backend: Backend) {
    let w = world(backend).await;
    member_only(&w, &w.empleado).await;
}

async fn viewer_only_reads_member_projects(backend: Backend) {
    let w = world(backend).await;
    member_only(&w, &w.viewer).await;
}

/// Empleado and viewer have the same rights over this milestone's routes
/// (they differ on uploads): read member projects, nothing else.
async fn member_only(w: &World, who: &TestUser) {
    let app = &w.app;
    let (m, h, s, t) = (
        w.member_project,
        w.hidden_project,
        w.supervisor_project,
        w.target.id,
    );

    let me = expect(app, who, Method::GET, "/v1/me", None, 200).await;
    assert_eq!(me["role"], who.role.as_str());
    let own = expect(
        app,
        who,
        Method::GET,
        &format!("/v1/users/{}", who.id),
        None,
        200,
    )
    .await;
    assert_eq!(own, me);
    expect(app, who, Method::GET, "/v1/users", None, 403).await;
    for id in [w.acme.admin.id, t] {
        expect(app, who, Method::GET, &format!("/v1/users/{id}"), None, 403).await;
    }
    expect(
        app,
        who,
        Method::POST,
        "/v1/users",
        Some(new_user(app, "viewer")),
        403,
    )
    .await;
    for id in [t, who.id] {
        expect(
            app,
            who,
            Method::PATCH,
            &format!("/v1/users/{id}"),
            Some(json!({ "name": "X" })),
            403,
        )
        .await;
    }
    expect(
        app,
        who,
        Method::POST,
        "/v1/projects",
        Some(json!({ "name": "X" })),
        403,
    )
    .await;

    // Only the member project is listed, and readable with its members.
    assert_eq!(visible_projects(app, who).await, BTreeSet::from([m]));
    let p = expect(
        app,
        who,
        Method::GET,
        &format!("/v1/projects/{m}"),
        None,
        200,
    )
    .await;
    assert_eq!(p["name"], "Torre Norte");
    let members = expect(
        app,
        who,
        Method::GET,
        &format!("/v1/projects/{m}/members"),
        None,
        200,
    )
    .await;
    assert_eq!(members["items"].as_array().unwrap().len(), 3);

    // Visible but not the role's to change: 403.
    let forbidden = [
        (
            Method::PATCH,
            format!("/v1/projects/{m}"),
            Some(json!({ "name": "X" })),
        ),
        (Method::DELETE, format!("/v1/projects/{m}"), None),
        (Method::PUT, format!("/v1/projects/{m}/members/{t}"), None),
        (
            Method::DELETE,
            format!("/v1/projects/{m}/members/{t}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/projects/{m}/members/{}", who.id),
            None,
        ),
    ];
    for (method, path, body) in forbidden {
        expect(app, who, method, &path, body, 403).await;
    }
    // Not a member: invisible.
    for p in [h, s] {
        let invisible = [
            (Method::GET, format!("/v1/projects/{p}"), None),
            (
                Method::PATCH,
                format!("/v1/projects/{p}"),
                Some(json!({ "name": "X" })),
            ),
            (Method::DELETE, format!("/v1/projects/{p}"), None),
            (Method::GET, format!("/v1/projects/{p}/members"), None),
            (
                Method::PUT,
                format!("/v1/projects/{p}/members/{}", who.id),
                None,
            ),
            (
                Method::DELETE,
                format!("/v1/projects/{p}/members/{t}"),
                None,
            ),
        ];
        for (method, path, body) in invisible {
            expect(app, who, method, &path, body, 404).await;
        }
    }

    // Nothing the refused calls aimed at changed.
    let admin = &w.acme.admin;
    let p = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/projects/{m}"),
        None,
        200,
    )
    .await;
    assert_eq!(
        (&p["name"], &p["archived"]),
        (&json!("Torre Norte"), &json!(false))
    );
    let members = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/projects/{m}/members"),
        None,
        200,
    )
    .await;
    let ids: BTreeSet<Uuid> = common::ids(members["items"].as_array().unwrap(), "user_id")
        .into_iter()
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([w.supervisor.id, w.empleado.id, w.viewer.id])
    );
    let target = expect(
        app,
        admin,
        Method::GET,
        &format!("/v1/users/{t}"),
        None,
        200,
    )
    .await;
    assert_eq!(target["name"], "empleado user");
    for p in [h, s] {
        let p = expect(
            app,
            admin,
            Method::GET,
            &format!("/v1/projects/{p}"),
            None,
            200,
        )
        .await;
        assert_eq!(p["archived"], false);
    }
}

async fn admin_cannot_demote_or_disable_itself(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let admin = &acme.admin;
    let own = format!("/v1/users/{}", admin.id);

    for role in ["supervisor", "empleado", "viewer"] {
        app.patch(&own, admin.token(), &json!({ "role": role }))
            .await
            .assert_invalid_field("role", "self_demotion");
    }
    app.patch(&own, admin.token(), &json!({ "disabled": true }))
        .await
        .assert_invalid_field("disabled", "self_disable");
    app.patch(
        &own,
        admin.token(),
        &json!({ "name": "Jefa", "disabled": true }),
    )
    .await
    .assert_invalid_field("disabled", "self_disable");

    // Nothing changed, and harmless self-edits still work.
    let me = app.get("/v1/me", admin.token()).await.json();
    assert_eq!(
        (&me["role"], &me["disabled"], &me["name"]),
        (&json!("admin"), &json!(false), &json!("Admin"))
    );
    let resp = app
        .patch(
            &own,
            admin.token(),
            &json!({ "name": "Jefa", "role": "admin", "disabled": false }),
        )
        .await;
    resp.assert_status(200);
    assert_eq!(resp.json()["name"], "Jefa");

    // Another admin can demote or disable this one.
    let other = app.create_user(&acme, "admin").await;
    let resp = app
        .patch(&own, other.token(), &json!({ "role": "viewer" }))
        .await;
    resp.assert_status(200);
    assert_eq!(resp.json()["role"], "viewer");
}

async fn role_changes_apply_to_existing_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let admin = acme.admin.token();
    let worker = app.create_user(&acme, "empleado").await;
    let boss = app.create_user(&acme, "supervisor").await;

    app.get("/v1/users", worker.token())
        .await
        .assert_problem(403, "forbidden");
    app.patch(
        &format!("/v1/users/{}", worker.id),
        admin,
        &json!({ "role": "supervisor" }),
    )
    .await
    .assert_status(200);
    // The token issued while it was an empleado now acts as a supervisor.
    app.get("/v1/users", worker.token())
        .await
        .assert_status(200);
    let p = app.create_project(worker.token(), "Ascendido").await;
    assert_eq!(
        app.get("/v1/me", worker.token()).await.json()["role"],
        "supervisor"
    );

    app.post(
        "/v1/projects",
        Some(boss.token()),
        &json!({ "name": "Antes" }),
    )
    .await
    .assert_status(201);
    app.patch(
        &format!("/v1/users/{}", boss.id),
        admin,
        &json!({ "role": "viewer" }),
    )
    .await
    .assert_status(200);
    app.post(
        "/v1/projects",
        Some(boss.token()),
        &json!({ "name": "Después" }),
    )
    .await
    .assert_problem(403, "forbidden");
    app.get("/v1/users", boss.token())
        .await
        .assert_problem(403, "forbidden");

    // Promoted to admin, a user sees everything at once.
    app.patch(
        &format!("/v1/users/{}", boss.id),
        admin,
        &json!({ "role": "admin" }),
    )
    .await
    .assert_status(200);
    app.get(&format!("/v1/projects/{p}"), boss.token())
        .await
        .assert_status(200);
    app.patch(
        &format!("/v1/users/{}", worker.id),
        boss.token(),
        &json!({ "name": "Promovido" }),
    )
    .await
    .assert_status(200);
}
