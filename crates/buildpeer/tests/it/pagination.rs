//! Cursor pagination over HTTP, on SQLite and PostgreSQL: projects, users
//! and members lists page newest first with no duplicates or gaps, the last
//! page has `next_cursor: null`, the default page holds everything small,
//! and `include_archived` filters projects (also across pages and for
//! non-admin members).

use crate::common;

use common::{Backend, TestApp};
use serde_json::Value;
use uuid::Uuid;

scenarios!(
    projects_page_newest_first,
    users_and_members_page_newest_first,
    include_archived
);

/// Asserts pages of sizes `sizes` whose items, concatenated, are exactly
/// `expected` (newest first).
#[track_caller]
fn assert_pages(pages: &[Vec<Value>], key: &str, sizes: &[usize], expected: &[Uuid]) {
    let got_sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(got_sizes, sizes, "page sizes");
    let all: Vec<Uuid> = pages.iter().flat_map(|p| common::ids(p, key)).collect();
    assert_eq!(all, expected, "items across pages, newest first");
}

async fn projects_page_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(app.create_project(token, &format!("Obra {i}")).await);
    }
    let newest_first: Vec<Uuid> = created.iter().rev().copied().collect();

    let pages = app.pages("/v1/projects", token, 3).await;
    assert_pages(&pages, "id", &[3, 3, 1], &newest_first);
    // Names confirm the order independently of ids.
    assert_eq!(pages[0][0]["name"], "Obra 6");
    assert_eq!(pages[2][0]["name"], "Obra 0");

    // Exact multiples end with a full page and no empty one.
    let pages = app.pages("/v1/projects", token, 7).await;
    assert_pages(&pages, "id", &[7], &newest_first);
    let pages = app.pages("/v1/projects", token, 1).await;
    assert_pages(&pages, "id", &[1; 7], &newest_first);
    let pages = app.pages("/v1/projects", token, 100).await;
    assert_pages(&pages, "id", &[7], &newest_first);

    // The default page holds them all.
    let body = app.get("/v1/projects", token).await.json();
    assert_eq!(
        common::ids(body["items"].as_array().unwrap(), "id"),
        newest_first
    );
    assert_eq!(body["next_cursor"], Value::Null);

    // A cursor is stable: the same cursor gives the same page, even after
    // newer rows appear.
    let first = app.get("/v1/projects?limit=3", token).await.json();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .get(&format!("/v1/projects?limit=3&cursor={cursor}"), token)
        .await
        .json();
    app.create_project(token, "Más nueva").await;
    let again = app
        .get(&format!("/v1/projects?limit=3&cursor={cursor}"), token)
        .await
        .json();
    assert_eq!(second, again);
    assert_eq!(
        common::ids(second["items"].as_array().unwrap(), "id"),
        newest_first[3..6]
    );
}

async fn users_and_members_page_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let beta = app.create_tenant("beta").await;
    let token = acme.admin.token();
    let mut users = vec![acme.admin.id];
    let mut supervisor = None;
    for role in [
        "supervisor",
        "empleado",
        "viewer",
        "empleado",
        "viewer",
        "admin",
    ] {
        let user = app.create_user(&acme, role).await;
        users.push(user.id);
        if role == "supervisor" {
            supervisor = Some(user);
        }
    }
    let supervisor = supervisor.unwrap();
    // Another tenant's users never show up in the pages.
    app.create_user(&beta, "empleado").await;
    let newest_first: Vec<Uuid> = users.iter().rev().copied().collect();

    let pages = app.pages("/v1/users", token, 3).await;
    assert_pages(&pages, "id", &[3, 3, 1], &newest_first);
    let pages = app.pages("/v1/users", token, 2).await;
    assert_pages(&pages, "id", &[2, 2, 2, 1], &newest_first);
    // A supervisor pages the same list.
    let pages = app.pages("/v1/users", supervisor.token(), 3).await;
    assert_pages(&pages, "id", &[3, 3, 1], &newest_first);

    // Members: newest membership first, whatever the users' ages.
    let project = app.create_project(token, "Torre").await;
    let order: Vec<Uuid> = [3, 0, 5, 1, 6, 2, 4].iter().map(|&i| users[i]).collect();
    for u in &order {
        app.add_member(token, project, *u).await;
    }
    let newest_membership_first: Vec<Uuid> = order.iter().rev().copied().collect();
    let path = format!("/v1/projects/{project}/members");
    let pages = app.pages(&path, token, 3).await;
    assert_pages(&pages, "user_id", &[3, 3, 1], &newest_membership_first);
    for item in pages.iter().flatten() {
        assert!(
            item["email"].is_string() && item["role"].is_string() && item["added_at"].is_string(),
            "{item}"
        );
    }
    // Re-adding changes nothing; removing and re-adding moves a member to the front.
    app.add_member(token, project, order[0]).await;
    let pages = app.pages(&path, token, 3).await;
    assert_pages(&pages, "user_id", &[3, 3, 1], &newest_membership_first);
    app.delete(&format!("{path}/{}", order[0]), token)
        .await
        .assert_status(204);
    app.add_member(token, project, order[0]).await;
    let mut moved: Vec<Uuid> = vec![order[0]];
    moved.extend(newest_membership_first[..6].iter().copied());
    let pages = app.pages(&path, token, 3).await;
    assert_pages(&pages, "user_id", &[3, 3, 1], &moved);
}

async fn include_archived(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.create_tenant("acme").await;
    let token = acme.admin.token();
    let worker = app.create_user(&acme, "empleado").await;
    let mut created = Vec::new();
    for i in 0..7 {
        let p = app.create_project(token, &format!("Obra {i}")).await;
        app.add_member(token, p, worker.id).await;
        created.push(p);
    }
    // Archive the 2nd and the 6th.
    for p in [created[1], created[5]] {
        app.delete(&format!("/v1/projects/{p}"), token)
            .await
            .assert_status(204);
    }
    let all: Vec<Uuid> = created.iter().rev().copied().collect();
    let live: Vec<Uuid> = all
        .iter()
        .copied()
        .filter(|p| *p != created[1] && *p != created[5])
        .collect();

    for who in [token, worker.token()] {
        for path in ["/v1/projects", "/v1/projects?include_archived=false"] {
            let pages = app.pages(path, who, 3).await;
            assert_pages(&pages, "id", &[3, 2], &live);
            assert!(pages.iter().flatten().all(|p| p["archived"] == false));
        }
        let pages = app
            .pages("/v1/projects?include_archived=true", who, 3)
            .await;
        assert_pages(&pages, "id", &[3, 3, 1], &all);
        let archived: Vec<Uuid> = pages
            .iter()
            .flatten()
            .filter(|p| p["archived"] == true)
            .map(|p| common::uuid(&p["id"]))
            .collect();
        assert_eq!(archived, vec![created[5], created[1]]);
    }
}
