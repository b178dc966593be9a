//! ListVolumes: contents, pagination and tokens.

use std::collections::HashMap;

use super::prelude::*;

/// Stops a driver whose tokens never run out from looping the suite.
const MAX_PAGES: usize = 10_000;

pub fn cases() -> Vec<Case> {
    vec![
        case!("ListVolumes/ok", "ListVolumes: a Controller Plugin with LIST_VOLUMES MUST implement this RPC", list_ok),
        case!("ListVolumes/new-volume-listed", "ListVolumes: the Plugin SHALL return all the volumes it knows about, including one just created", new_listed),
        case!("ListVolumes/deleted-volume-absent", "ListVolumes: a deleted volume no longer exists and is not returned", deleted_absent),
        case!("ListVolumes/entries-have-volume", "ListVolumes: Entry.volume is REQUIRED and carries the REQUIRED volume_id", entries_have_volume),
        case!("ListVolumes/max-entries-respected", "ListVolumes: the Plugin MUST NOT return more entries than max_entries, and MUST set next_token when more remain", max_entries),
        case!("ListVolumes/pagination-visits-each-once", "ListVolumes: paging with next_token visits every volume exactly once when nothing changes", pagination),
        case!("ListVolumes/unpaged-has-no-token", "ListVolumes: max_entries 0 means no limit, so all entries come back and no next_token is needed", unpaged_no_token),
        case!("ListVolumes/invalid-token", "ListVolumes: an invalid starting_token → 10 ABORTED", invalid_token),
        case!("ListVolumes/never-issued-tokens", "ListVolumes: a starting_token the plugin never issued (\"garbage\", \"-1\", \"999999\", a volume's name) is not valid → 10 ABORTED", never_issued_tokens),
        case!("ListVolumes/negative-max-entries", "ListVolumes: max_entries MUST NOT be negative → 3 INVALID_ARGUMENT", negative_max_entries),
        case!("ListVolumes/volume-added-between-pages", "ListVolumes: the CO SHALL NOT expect a consistent view while volumes are created; paging continues with the issued next_token", added_between_pages),
        case!("ListVolumes/volume-removed-between-pages", "ListVolumes: the CO SHALL NOT expect a consistent view while volumes are deleted; paging continues with the issued next_token", removed_between_pages),
        case!("ListVolumes/volume-condition", "ListVolumes: VolumeStatus.volume_condition MUST be specified when VOLUME_CONDITION is advertised", volume_condition),
        case!("ListVolumes/published-nodes-status", "ListVolumes: Entry.status MUST be specified when LIST_VOLUMES_PUBLISHED_NODES is advertised", published_nodes_status),
    ]
}

fn need_list(cx: &Ctx) -> CaseResult {
    cx.need_controller(ControllerCap::ListVolumes)
}

async fn page(cx: &Ctx, max_entries: i32, token: &str) -> Result<v1::ListVolumesResponse, Stop> {
    check::ok(
        cx.list_volumes(v1::ListVolumesRequest {
            max_entries,
            starting_token: token.to_string(),
        })
        .await,
        "ListVolumes",
    )
}

fn ids(resp: &v1::ListVolumesResponse) -> Vec<String> {
    resp.entries
        .iter()
        .filter_map(|e| e.volume.as_ref().map(|v| v.volume_id.clone()))
        .collect()
}

/// Every id over all pages, in order, duplicates kept.
async fn list_all(cx: &Ctx, max_entries: i32) -> Result<Vec<String>, Stop> {
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let resp = page(cx, max_entries, &token).await?;
        if max_entries > 0 {
            ensure!(
                resp.entries.len() <= max_entries as usize,
                "asked for at most {max_entries} entries, got {}",
                resp.entries.len()
            );
        }
        all.extend(ids(&resp));
        if resp.next_token.is_empty() {
            return Ok(all);
        }
        token = resp.next_token;
    }
    Err(fail(format!(
        "still returning next_token after {MAX_PAGES} pages"
    )))
}

async fn volumes(cx: &Ctx, n: usize) -> Result<Vec<String>, Stop> {
    let mut made = Vec::new();
    for _ in 0..n {
        made.push(cx.new_volume().await?.volume_id);
    }
    Ok(made)
}

async fn list_ok(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    page(&cx, 0, "").await.map(drop)
}

async fn new_listed(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let volume = cx.new_volume().await?;
    let all = list_all(&cx, 0).await?;
    ensure!(
        all.contains(&volume.volume_id),
        "{:?} not listed",
        volume.volume_id
    );
    Ok(())
}

async fn deleted_absent(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let gone = cx.deleted_volume_id().await?;
    let all = list_all(&cx, 0).await?;
    ensure!(!all.contains(&gone), "deleted volume {gone:?} still listed");
    Ok(())
}

async fn entries_have_volume(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    cx.new_volume().await?;
    let resp = page(&cx, 0, "").await?;
    for entry in &resp.entries {
        let volume = entry
            .volume
            .as_ref()
            .ok_or_else(|| fail("an entry has no volume"))?;
        ensure!(
            !volume.volume_id.is_empty(),
            "an entry has an empty volume_id"
        );
    }
    Ok(())
}

async fn max_entries(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    volumes(&cx, 3).await?;
    let total = list_all(&cx, 0).await?.len();
    let first = page(&cx, 2, "").await?;
    ensure!(
        first.entries.len() <= 2,
        "max_entries 2 gave {} entries",
        first.entries.len()
    );
    ensure!(
        total <= first.entries.len() || !first.next_token.is_empty(),
        "{total} volumes exist, {} returned, and no next_token",
        first.entries.len()
    );
    Ok(())
}

async fn pagination(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let made = volumes(&cx, 5).await?;
    let all = list_all(&cx, 2).await?;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &all {
        *seen.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    ensure!(twice.is_empty(), "listed more than once: {twice:?}");
    let missing: Vec<_> = made
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .collect();
    ensure!(missing.is_empty(), "never listed: {missing:?}");
    Ok(())
}

async fn unpaged_no_token(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    cx.new_volume().await?;
    let resp = page(&cx, 0, "").await?;
    ensure!(
        resp.next_token.is_empty(),
        "next_token {:?} without max_entries",
        resp.next_token
    );
    Ok(())
}

async fn invalid_token(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let req = v1::ListVolumesRequest {
        max_entries: 0,
        starting_token: "sanity-not-a-token-\u{7f}!".to_string(),
    };
    check::code(cx.list_volumes(req).await, &[Code::Aborted]).map(drop)
}

async fn negative_max_entries(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let req = v1::ListVolumesRequest {
        max_entries: -1,
        starting_token: String::new(),
    };
    check::invalid_argument(cx.list_volumes(req).await)
}

async fn added_between_pages(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    volumes(&cx, 3).await?;
    let first = page(&cx, 2, "").await?;
    ensure!(
        !first.next_token.is_empty(),
        "3+ volumes, max_entries 2, no next_token"
    );
    let added = cx.new_volume().await?;
    let mut token = first.next_token;
    for _ in 0..MAX_PAGES {
        let next = page(&cx, 2, &token).await?;
        if next.next_token.is_empty() {
            break;
        }
        token = next.next_token;
    }
    let all = list_all(&cx, 0).await?;
    ensure!(
        all.contains(&added.volume_id),
        "added volume missing from a fresh listing"
    );
    Ok(())
}

async fn removed_between_pages(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let made = volumes(&cx, 4).await?;
    let first = page(&cx, 2, "").await?;
    ensure!(
        !first.next_token.is_empty(),
        "4+ volumes, max_entries 2, no next_token"
    );
    // Deleting the page's last entry is what breaks tokens that point at it.
    let victim = ids(&first)
        .into_iter()
        .rev()
        .find(|id| made.contains(id))
        .unwrap_or_else(|| made[0].clone());
    check::ok(
        cx.delete_volume(v1::DeleteVolumeRequest {
            volume_id: victim,
            ..Default::default()
        })
        .await,
        "DeleteVolume",
    )?;
    page(&cx, 2, &first.next_token).await.map(drop)
}

async fn volume_condition(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    cx.need_controller(ControllerCap::VolumeCondition)?;
    let volume = cx.new_volume().await?;
    let resp = page(&cx, 0, "").await?;
    let entry = resp
        .entries
        .iter()
        .find(|e| {
            e.volume
                .as_ref()
                .is_some_and(|v| v.volume_id == volume.volume_id)
        })
        .ok_or_else(|| fail(format!("{:?} not listed", volume.volume_id)))?;
    ensure!(
        entry
            .status
            .as_ref()
            .is_some_and(|s| s.volume_condition.is_some()),
        "entry status {:?} has no volume_condition",
        entry.status
    );
    Ok(())
}

async fn published_nodes_status(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    cx.need_controller(ControllerCap::ListVolumesPublishedNodes)?;
    cx.new_volume().await?;
    let resp = page(&cx, 0, "").await?;
    ensure!(
        resp.entries.iter().all(|e| e.status.is_some()),
        "an entry has no status"
    );
    Ok(())
}

/// Every next_token a full walk one entry at a time is given: strings the
/// plugin did issue, which a case must not present as never issued.
async fn issued_tokens(cx: &Ctx) -> Result<Vec<String>, Stop> {
    let mut issued = Vec::new();
    let mut token = String::new();
    for _ in 0..MAX_PAGES {
        let resp = page(cx, 1, &token).await?;
        if resp.next_token.is_empty() || issued.contains(&resp.next_token) {
            break;
        }
        token = resp.next_token.clone();
        issued.push(resp.next_token);
    }
    Ok(issued)
}

async fn never_issued_tokens(cx: Ctx) -> CaseResult {
    need_list(&cx)?;
    let mut tokens: Vec<String> = ["garbage", "-1", "999999"].map(String::from).into();
    if cx.caps().has_controller(ControllerCap::CreateDeleteVolume) {
        let name = cx.unique_name();
        cx.volume_from(cx.volume_request(&name)).await?;
        tokens.push(name);
    }
    let issued = issued_tokens(&cx).await?;
    for token in tokens.iter().filter(|t| !issued.contains(t)) {
        let req = v1::ListVolumesRequest {
            max_entries: 0,
            starting_token: token.clone(),
        };
        check::code(cx.list_volumes(req).await, &[Code::Aborted])
            .map_err(|stop| check::about(stop, format!("starting_token {token:?}")))?;
    }
    Ok(())
}
