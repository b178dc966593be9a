//! The provisioner's view: CreateVolume, DeleteVolume, ListVolumes,
//! GetCapacity, ValidateVolumeCapabilities, ControllerGetVolume.

mod common;

use std::collections::{BTreeSet, HashMap};

use cairn_proto::v1::volume_capability::{access_mode::Mode, AccessType, BlockVolume, MountVolume};
use cairn_proto::v1::*;
use common::*;
use tonic::Code;

#[tokio::test]
async fn create_validates_every_argument() {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;

    let mut no_name = create_request("", 1 << 20);
    no_name.name.clear();
    assert_code(c.create_volume(no_name).await, Code::InvalidArgument);

    let mut no_caps = create_request("pvc-nocaps", 1 << 20);
    no_caps.volume_capabilities.clear();
    assert_code(c.create_volume(no_caps).await, Code::InvalidArgument);

    for cap in [
        mount_capability(Mode::MultiNodeMultiWriter),
        mount_capability(Mode::Unknown),
        // Block is supported on one node only (tests/block.rs).
        VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            ..mount_capability(Mode::MultiNodeMultiWriter)
        },
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
            ..rwo()
        },
        VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                mount_flags: vec!["uid=1000".into()],
                ..Default::default()
            })),
            ..rwo()
        },
    ] {
        let mut req = create_request("pvc-badcap", 1 << 20);
        req.volume_capabilities = vec![cap.clone()];
        assert_code(c.create_volume(req).await, Code::InvalidArgument);
    }

    let mut unknown = create_request("pvc-param", 1 << 20);
    unknown.parameters.insert("sizee".into(), "1".into());
    let status = c.create_volume(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("sizee"), "{}", status.message());

    let mut range = create_request("pvc-range", 10 << 20);
    range.capacity_range.as_mut().unwrap().limit_bytes = 1 << 20;
    assert_code(c.create_volume(range).await, Code::OutOfRange);
    assert_code(
        c.create_volume(create_request("pvc-huge", i64::MAX)).await,
        Code::OutOfRange,
    );

    for hostile in ["../escape", "a/b", "..", "x\0y", &"a".repeat(129)] {
        assert_code(
            c.create_volume(create_request(hostile, 1 << 20)).await,
            Code::InvalidArgument,
        );
    }

    let mut source = create_request("pvc-clone", 1 << 20);
    source.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: "local:node-a:other".into(),
            },
        )),
    });
    // Cloning is supported (tests/snapshots.rs); this source does not exist.
    assert_code(c.create_volume(source).await, Code::NotFound);

    // Nothing was left behind by any refused call.
    let volumes: Vec<_> = std::fs::read_dir(driver.root.join("volumes"))
        .unwrap()
        .collect();
    assert!(volumes.is_empty(), "{volumes:?}");
    let outside = driver.dir.path().join("escape");
    assert!(!outside.exists());
}

#[tokio::test]
async fn create_is_idempotent_on_name_and_refuses_incompatible_repeats() {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let first = c
        .create_volume(create_request("pvc-same", 2 << 20))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .create_volume(create_request("pvc-same", 2 << 20))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first, again);
    assert_code(
        c.create_volume(create_request("pvc-same", 4 << 20)).await,
        Code::AlreadyExists,
    );
    let mut other_params = create_request("pvc-same", 2 << 20);
    other_params
        .parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "other".into());
    assert_code(c.create_volume(other_params).await, Code::AlreadyExists);

    // A range the existing size satisfies is compatible.
    let mut range = create_request("pvc-same", 1 << 20);
    range.capacity_range.as_mut().unwrap().limit_bytes = 3 << 20;
    assert_eq!(c.create_volume(range).await.unwrap().into_inner(), first);

    // Absent capacity gets the default size.
    let mut no_range = create_request("pvc-default", 0);
    no_range.capacity_range = None;
    let v = create(&mut c, no_range).await;
    assert_eq!(v.capacity_bytes, 1 << 30);

    // A 128-byte name works and its id stays within 128 bytes.
    let long = "p".repeat(128);
    let v = create(&mut c, create_request(&long, 1 << 20)).await;
    assert!(v.volume_id.len() <= 128);
    let again = c
        .create_volume(create_request(&long, 1 << 20))
        .await
        .unwrap();
    assert_eq!(again.into_inner().volume.unwrap().volume_id, v.volume_id);
}

#[tokio::test]
async fn racing_creates_of_one_name_make_exactly_one_volume() {
    let driver = TestDriver::start();
    let channel = driver.channel().await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut c = cairn_proto::v1::controller_client::ControllerClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            c.create_volume(create_request("pvc-race", 1 << 20))
                .await
                .map(|r| r.into_inner().volume.unwrap().volume_id)
        }));
    }
    let mut ids = BTreeSet::new();
    for task in tasks {
        ids.insert(task.await.unwrap().expect("every racing create succeeds"));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let entries: Vec<_> = std::fs::read_dir(driver.root.join("volumes"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from("pvc-race")]);
    assert_eq!(
        std::fs::read_dir(driver.root.join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn topology_places_volumes_on_this_node_only() {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let segment = |node: &str| Topology {
        segments: HashMap::from([("topology.cairn.csi.io/node".into(), node.into())]),
    };
    let mut elsewhere = create_request("pvc-elsewhere", 1 << 20);
    elsewhere.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![segment("node-b")],
        preferred: vec![segment("node-b")],
    });
    assert_code(c.create_volume(elsewhere).await, Code::ResourceExhausted);

    let mut here = create_request("pvc-here", 1 << 20);
    here.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![segment("node-b"), segment(NODE)],
        preferred: vec![segment(NODE)],
    });
    let v = create(&mut c, here).await;
    assert_eq!(v.accessible_topology, vec![segment(NODE)]);

    let capacity = |topology: Option<Topology>| GetCapacityRequest {
        volume_capabilities: vec![rwo()],
        parameters: Default::default(),
        accessible_topology: topology,
    };
    let here = c
        .get_capacity(capacity(Some(segment(NODE))))
        .await
        .unwrap()
        .into_inner();
    let any = c.get_capacity(capacity(None)).await.unwrap().into_inner();
    let there = c
        .get_capacity(capacity(Some(segment("node-b"))))
        .await
        .unwrap()
        .into_inner();
    assert!(here.available_capacity > 0);
    assert!(any.available_capacity > 0);
    assert_eq!(there.available_capacity, 0);
    let mut multi = capacity(None);
    multi.volume_capabilities = vec![mount_capability(Mode::MultiNodeMultiWriter)];
    assert_eq!(
        c.get_capacity(multi)
            .await
            .unwrap()
            .into_inner()
            .available_capacity,
        0
    );
    let mut bad = capacity(None);
    bad.parameters.insert("bogus".into(), "1".into());
    assert_code(c.get_capacity(bad).await, Code::InvalidArgument);
}

#[tokio::test]
async fn delete_is_idempotent_and_validates_ids() {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let v = create(&mut c, create_request("pvc-del", 1 << 20)).await;
    std::fs::write(driver.data_dir("pvc-del").join("f"), b"x").unwrap();
    c.delete_volume(delete_request(&v.volume_id)).await.unwrap();
    c.delete_volume(delete_request(&v.volume_id)).await.unwrap();
    assert!(!driver.root.join("volumes/pvc-del").exists());
    c.delete_volume(delete_request(&format!("local:{NODE}:never-existed")))
        .await
        .unwrap();
    assert_code(
        c.delete_volume(delete_request("")).await,
        Code::InvalidArgument,
    );
    // Ids Cairn never issued name volumes that do not exist: deleting one
    // succeeds and touches nothing (an unknown PV handle stays releasable).
    let long = "x".repeat(4096);
    for never_issued in [
        "garbage",
        "local:node-a:../../etc",
        "nfs:x:y",
        "local:node-a:a/b",
        "local:node-a:a\0b",
        long.as_str(),
    ] {
        c.delete_volume(delete_request(never_issued))
            .await
            .unwrap_or_else(|e| panic!("DeleteVolume({never_issued:.40}): {e}"));
    }
    assert!(driver.root.join("volumes").exists());
    assert_eq!(
        std::fs::read_dir(driver.root.join("trash"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn validate_and_get_volume() {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let v = create(&mut c, create_request("pvc-val", 1 << 20)).await;
    let validate = |id: &str, caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: id.into(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let ok = c
        .validate_volume_capabilities(validate(&v.volume_id, vec![rwo()]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.confirmed.unwrap().volume_capabilities, vec![rwo()]);
    let no = c
        .validate_volume_capabilities(validate(
            &v.volume_id,
            vec![mount_capability(Mode::MultiNodeMultiWriter)],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(no.confirmed.is_none() && !no.message.is_empty());
    assert_code(
        c.validate_volume_capabilities(validate(&v.volume_id, vec![]))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.validate_volume_capabilities(validate("", vec![rwo()]))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.validate_volume_capabilities(validate(&format!("local:{NODE}:nope"), vec![rwo()]))
            .await,
        Code::NotFound,
    );

    let got = c
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap(), v);
    assert!(!got.status.unwrap().volume_condition.unwrap().abnormal);
    assert_code(
        c.controller_get_volume(ControllerGetVolumeRequest {
            volume_id: format!("local:{NODE}:nope"),
        })
        .await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn list_volumes_pages_visit_every_volume_once() {
    let driver = TestDriver::start();
    let mut c = driver.controller().await;
    let mut expected = BTreeSet::new();
    for i in 0..7 {
        let v = create(&mut c, create_request(&format!("pvc-{i}"), 1 << 20)).await;
        expected.insert(v.volume_id);
    }
    let list = |token: String| ListVolumesRequest {
        max_entries: 3,
        starting_token: token,
    };
    let first = c
        .list_volumes(list(String::new()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.entries.len(), 3);
    assert!(!first.next_token.is_empty());
    // Changes between pages: one already listed removed, one new added.
    let listed = first.entries[0].volume.as_ref().unwrap().volume_id.clone();
    c.delete_volume(delete_request(&listed)).await.unwrap();
    let added = create(&mut c, create_request("pvc-z", 1 << 20)).await;

    let mut seen: Vec<String> = first
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    let mut token = first.next_token;
    while !token.is_empty() {
        let page = c.list_volumes(list(token)).await.unwrap().into_inner();
        assert!(page.entries.len() <= 3);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        token = page.next_token;
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "a volume was listed twice: {seen:?}"
    );
    expected.insert(added.volume_id);
    assert_eq!(unique, expected);

    assert_code(
        c.list_volumes(list("not/a/token".into())).await,
        Code::Aborted,
    );
    assert_code(
        c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new(),
        })
        .await,
        Code::InvalidArgument,
    );
    let all = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 7);
    assert!(all.next_token.is_empty());
}
