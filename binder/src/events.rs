//! Events on pods: IPReserved, IPBound, IPReleased (Normal) and IPConflict (Warning), through
//! kube-runtime's events.k8s.io recorder.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::bind::{PodKey, Reason};
use crate::error::Error;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    pub fn new(client: Client, instance: String) -> Events {
        Events {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "pinip-binder".into(),
                    instance: Some(instance),
                },
            ),
        }
    }

    /// Records `reason` with `note` on `pod` (which may already be gone: the event stays in
    /// its namespace, naming it).
    pub async fn publish(&self, pod: &PodKey, reason: Reason, note: String) -> Result<(), Error> {
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            namespace: Some(pod.namespace.clone()),
            name: Some(pod.name.clone()),
            uid: Some(pod.uid.clone()),
            ..Default::default()
        };
        let (type_, action) = match reason {
            Reason::IPConflict => (EventType::Warning, "Check"),
            Reason::IPReleased => (EventType::Normal, "Release"),
            Reason::IPReserved | Reason::IPBound => (EventType::Normal, "Bind"),
        };
        let mut note = note;
        if note.len() > 1000 {
            let mut end = 1000;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        self.recorder
            .publish(
                &Event {
                    type_,
                    reason: reason.as_str().into(),
                    note: Some(note),
                    action: action.into(),
                    secondary: None,
                },
                &reference,
            )
            .await
            .map_err(|source| Error::Event {
                pod: pod.to_string(),
                source,
            })
    }
}
