//! Tenant isolation sweep, on SQLite and PostgreSQL: with tenant B's admin
//! token, every route that takes an id is called with tenant A's ids (and
//! with mixes of A's and B's ids); each must answer 404 with exactly the body
//! a random, non-existent id gets, and tenant A must be unchanged afterwards.
//! B's lists never contain A's rows, and malformed ids are 404 too.

use crate::common;

use common::{Backend, TestApp, TestTenant, TestUser};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

scenarios!(
    foreign_ids_look_like_missing_ones,
    lists_never_leak_across_tenants,
    malformed_ids_are_not_found,
);

/// Everything of tenant A that B could try to reach.
struct TenantData {
    tenant: TestTenant,
    /// An empleado, member of both projects.
    member: TestUser,
    user: Uuid,
    project: Uuid,
    archived_project: Uuid,
}

async fn populate(app: &TestApp, slug: &str) -> TenantData {
    let tenant = app.create_tenant(slug).await;
    let admin = tenant.admin.token().to_owned();
    let member = app.create_user(&tenant, "empleado").await;
    let user = member.id;
    let project = app.create_project(&admin, &format!("Obra {slug}")).await;
    app.add_member(&admin, project, user).await;
    let archived_project = app
        .create_project(&admin, &format!("Archivada {slug}"))
        .await;
    app.add_member(&admin, archived_project, user).await;
    app.delete(&format!("/v1/projects/{archived_project}"), &admin)
        .await
        .assert_status(204);
    TenantData {
        tenant,
        member,
        user,
        project,
        archived_project,
    }
}

/// What tenant A looks like to its own admin: every user, project and
/// membership, timestamps included (any write would bump `updated_at`).
async fn snapshot(app: &TestApp, a: &TenantData) -> Vec<Value> {
    let token = a.tenant.admin.token();
    let mut snap = Vec::new();
    for path in [
        "/v1/users?limit=100".to_owned(),
        "/v1/projects?limit=100&include_archived=true".to_owned(),
        format!("/v1/projects/{}/members", a.project),
        format!("/v1/projects/{}/members", a.archived_project),
    ] {
        let resp = app.get(&path, token).await;
        resp.assert_status(200);
        snap.push(resp.json());
    }
    snap
}

async fn foreign_ids_look_like_missing_ones(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = populate(&app, "alfa").await;
    let b = populate(&app, "beta").await;
    let before = snapshot(&app, &a).await;
    let b_token = b.tenant.admin.token();
    let missing = Uuid::now_v7();

    // (method, path with A's ids, the same path with non-existent ids, body)
    let (ap, aa, au, aadmin) = (a.project, a.archived_project, a.user, a.tenant.admin.id);
    let (bp, bu) = (b.project, b.user);
    let patch_user = json!({ "name": "Pwned", "role": "viewer", "disabled": true });
    let patch_project = json!({ "name": "Pwned", "code": "X-1", "address": null });
    let cases: Vec<(Method, String, String, Option<Value>)> = vec![
        (
            Method::GET,
            format!("/v1/users/{au}"),
            format!("/v1/users/{missing}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/users/{aadmin}"),
            format!("/v1/users/{missing}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/v1/users/{au}"),
            format!("/v1/users/{missing}"),
            Some(patch_user.clone()),
        ),
        (
            Method::PATCH,
            format!("/v1/users/{aadmin}"),
            format!("/v1/users/{missing}"),
            Some(patch_user.clone()),
        ),
        (
            Method::GET,
            format!("/v1/projects/{ap}"),
            format!("/v1/projects/{missing}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/projects/{aa}"),
            format!("/v1/projects/{missing}"),
            None,
        ),
        (
            Method::PATCH,
            format!("/v1/projects/{ap}"),
            format!("/v1/projects/{missing}"),
            Some(patch_project.clone()),
        ),
        (
            Method::PATCH,
            format!("/v1/projects/{aa}"),
            format!("/v1/projects/{missing}"),
            Some(patch_project.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/projects/{ap}"),
            format!("/v1/projects/{missing}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/projects/{ap}/members"),
            format!("/v1/projects/{missing}/members"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/projects/{ap}/members?limit=1"),
            format!("/v1/projects/{missing}/members?limit=1"),
            None,
        ),
        // A's project and A's user.
        (
            Method::PUT,
            format!("/v1/projects/{ap}/members/{au}"),
            format!("/v1/projects/{missing}/members/{missing}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/projects/{ap}/members/{au}"),
            format!("/v1/projects/{missing}/members/{missing}"),
            None,
        ),
        // B's project and A's user.
        (
            Method::PUT,
            format!("/v1/projects/{bp}/members/{au}"),
            format!("/v1/projects/{bp}/members/{missing}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/projects/{bp}/members/{au}"),
            format!("/v1/projects/{bp}/members/{missing}"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/projects/{bp}/members/{aadmin}"),
            format!("/v1/projects/{bp}/members/{missing}"),
            None,
        ),
        // A's project and B's user.
        (
            Method::PUT,
            format!("/v1/projects/{ap}/members/{bu}"),
            format!("/v1/projects/{missing}/members/{bu}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/v1/projects/{ap}/members/{bu}"),
            format!("/v1/projects/{missing}/members/{bu}"),
            None,
        ),
        (
            Method::PUT,
            format!("/v1/projects/{aa}/members/{bu}"),
            format!("/v1/projects/{missing}/members/{bu}"),
            None,
        ),
    ];
    for (method, foreign, absent, body) in cases {
        let got = app
            .call(method.clone(), &foreign, Some(b_token), body.as_ref())
            .await;
        let reference = app
            .call(method, &absent, Some(b_token), body.as_ref())
            .await;
        let got_body = got.assert_problem(404, "not_found");
        let reference_body = reference.assert_problem(404, "not_found");
        assert_eq!(got_body, reference_body, "{got} vs {reference}");
        assert_eq!(got.text, reference.text, "{got} vs {reference}");
    }

    // Tenant A is exactly as it was, and its users still work.
    assert_eq!(snapshot(&app, &a).await, before);
    app.get("/v1/me", a.tenant.admin.token())
        .await
        .assert_status(200);
    // B's own rows were not touched either: its project still has one member.
    let members = app
        .get(&format!("/v1/projects/{bp}/members"), b_token)
        .await
        .json();
    assert_eq!(
        common::ids(members["items"].as_array().unwrap(), "user_id"),
        vec![bu]
    );

    // The same sweep the other way round, more briefly.
    let a_token = a.tenant.admin.token();
    for path in [
        format!("/v1/users/{bu}"),
        format!("/v1/projects/{bp}"),
        format!("/v1/projects/{bp}/members"),
    ] {
        app.get(&path, a_token)
            .await
            .assert_problem(404, "not_found");
    }
}

async fn lists_never_leak_across_tenants(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = populate(&app, "alfa").await;
    let b = populate(&app, "beta").await;

    for (own, other) in [(&a, &b), (&b, &a)] {
        let token = own.tenant.admin.token();
        let users = app.get("/v1/users?limit=100", token).await.json();
        let users = users["items"].as_array().unwrap();
        for u in users {
            assert_eq!(common::uuid(&u["tenant_id"]), own.tenant.id, "{u}");
        }
        let user_ids = common::ids(users, "id");
        assert!(user_ids.contains(&own.user) && user_ids.contains(&own.tenant.admin.id));
        assert!(!user_ids.contains(&other.user) && !user_ids.contains(&other.tenant.admin.id));

        for query in ["", "&include_archived=true", "&include_archived=false"] {
            let projects = app
                .get(&format!("/v1/projects?limit=100{query}"), token)
                .await
                .json();
            let projects = projects["items"].as_array().unwrap();
            for p in projects {
                assert_eq!(common::uuid(&p["tenant_id"]), own.tenant.id, "{p}");
            }
            let project_ids = common::ids(projects, "id");
            assert!(project_ids.contains(&own.project));
            assert!(!project_ids.contains(&other.project));
            assert!(!project_ids.contains(&other.archived_project));
        }

        let members = app
            .get(&format!("/v1/projects/{}/members", own.project), token)
            .await
            .json();
        assert_eq!(
            common::ids(members["items"].as_array().unwrap(), "user_id"),
            vec![own.user]
        );

        // The member sees its tenant's projects only.
        let projects = app
            .get("/v1/projects?include_archived=true", own.member.token())
            .await
            .json();
        let mut project_ids = common::ids(projects["items"].as_array().unwrap(), "id");
        project_ids.sort();
        let mut expected = vec![own.project, own.archived_project];
        expected.sort();
        assert_eq!(project_ids, expected);
    }

    // A user of A that uses its token on B's data gets nothing: tokens carry
    // their tenant, and the same e-mail in B is a different user.
    let shared = "same@person.test";
    for t in [&a.tenant, &b.tenant] {
        app.post(
            "/v1/users",
            Some(t.admin.token()),
            &json!({ "email": shared, "password": common::PASSWORD, "name": "Dup", "role": "empleado" }),
        )
        .await
        .assert_status(201);
    }
    let in_a = app.login_ok("alfa", shared, common::PASSWORD).await;
    let in_b = app.login_ok("beta", shared, common::PASSWORD).await;
    let me_a = app.get("/v1/me", &in_a.access).await.json();
    let me_b = app.get("/v1/me", &in_b.access).await.json();
    assert_ne!(me_a["id"], me_b["id"]);
    assert_eq!(common::uuid(&me_a["tenant_id"]), a.tenant.id);
    assert_eq!(common::uuid(&me_b["tenant_id"]), b.tenant.id);
}

async fn malformed_ids_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = populate(&app, "alfa").await;
    let token = a.tenant.admin.token();
    let missing = Uuid::now_v7();
    let reference = app
        .get(&format!("/v1/projects/{missing}"), token)
        .await
        .assert_problem(404, "not_found");

    let (p, u) = (a.project, a.user);
    for bad in [
        "abc",
        "123",
        "00000000-0000-0000-0000-00000000000g",
        "%20",
        "null",
    ] {
        let cases = [
            (Method::GET, format!("/v1/users/{bad}"), None),
            (
                Method::PATCH,
                format!("/v1/users/{bad}"),
                Some(json!({ "name": "X" })),
            ),
            (Method::GET, format!("/v1/projects/{bad}"), None),
            (
                Method::PATCH,
                format!("/v1/projects/{bad}"),
                Some(json!({ "name": "X" })),
            ),
            (Method::DELETE, format!("/v1/projects/{bad}"), None),
            (Method::GET, format!("/v1/projects/{bad}/members"), None),
            (Method::PUT, format!("/v1/projects/{bad}/members/{u}"), None),
            (Method::PUT, format!("/v1/projects/{p}/members/{bad}"), None),
            (
                Method::DELETE,
                format!("/v1/projects/{p}/members/{bad}"),
                None,
            ),
        ];
        for (method, path, body) in cases {
            let resp = app.call(method, &path, Some(token), body.as_ref()).await;
            assert_eq!(resp.assert_problem(404, "not_found"), reference, "{resp}");
        }
    }
    // The project and its member are still there.
    let members = app
        .get(&format!("/v1/projects/{p}/members"), token)
        .await
        .json();
    assert_eq!(
        common::ids(members["items"].as_array().unwrap(), "user_id"),
        vec![u]
    );
}
