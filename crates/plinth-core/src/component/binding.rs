//! Bindings. An output binding invokes an operation on an external system; an input binding
//! reads events from one and hands each over with an acknowledgement, so that a queue-backed
//! binding can redeliver what the app failed to process. One component may be both.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::Component;
pub use super::pubsub::Acknowledger;
use crate::{ComponentSpec, Metadata, Result};

/// Component metadata: the directions a binding is used in (Dapr's `direction`): `input`,
/// `output`, or both as `input, output`. Without it, every direction the component type
/// supports is used.
pub const DIRECTION: &str = "direction";

/// An invocation of an output binding.
#[derive(Debug, Clone, Default)]
pub struct BindingRequest {
    /// The operation (`get`, `post`, `create`, ...).
    pub operation: String,
    /// The payload.
    pub data: Bytes,
    /// Request metadata.
    pub metadata: Metadata,
}

/// The binding's answer.
#[derive(Debug, Clone, Default)]
pub struct BindingResponse {
    /// The payload.
    pub data: Bytes,
    /// Response metadata.
    pub metadata: Metadata,
}

/// An output binding.
#[async_trait]
pub trait OutputBinding: Component {
    /// The operations the binding supports.
    fn operations(&self) -> Vec<String>;

    /// Invoke an operation.
    async fn invoke(&self, req: BindingRequest) -> Result<BindingResponse>;
}

/// How to read an input binding.
#[derive(Debug, Clone, Default)]
pub struct ReadRequest {
    /// How many unsettled events the component may hand out at once; 0 counts as 1.
    pub max_in_flight: usize,
}

/// An event read from the binding's system.
#[derive(Debug, Clone, Default)]
pub struct InputEvent {
    /// The payload.
    pub data: Bytes,
    /// Event metadata, as the component type documents it.
    pub metadata: Metadata,
}

/// An event with the handle that settles it. `ack` means the app processed it; `nack`, or
/// dropping the delivery unsettled, means it did not: a component whose system can redeliver
/// does so, one that cannot (a timer) drops the event.
#[derive(Debug)]
pub struct InputDelivery {
    /// The event.
    pub event: InputEvent,
    /// Settles it.
    pub acker: Box<dyn Acknowledger>,
}

impl InputDelivery {
    /// The event was processed.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// The event was not processed.
    pub async fn nack(self) -> Result<()> {
        self.acker.nack().await
    }
}

/// The events of one read. The component ends the stream (drops its sender) when it fails,
/// closes or is replaced; the reader then reads again. Dropping the stream stops reading,
/// and unsettled events count as not processed.
#[derive(Debug)]
pub struct InputStream {
    /// Deliveries, at most `max_in_flight` of them unsettled.
    pub receiver: mpsc::Receiver<InputDelivery>,
}

/// An input binding.
#[async_trait]
pub trait InputBinding: Component {
    /// Start reading events. Each call is an independent reader; the building block keeps
    /// one per binding.
    async fn read(&self, req: ReadRequest) -> Result<InputStream>;
}

/// Which directions of a binding are in use, or supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Directions {
    /// Events are read from it.
    pub input: bool,
    /// Operations are invoked on it.
    pub output: bool,
}

impl Directions {
    /// The `direction` metadata of a spec, or `None` when it has none. The key and the values
    /// are compared without case, values without surrounding spaces; anything but `input`
    /// and `output` is an error naming the field.
    pub fn from_spec(spec: &ComponentSpec) -> Result<Option<Self>> {
        // Dapr matches the key without case too.
        let Some(raw) = spec
            .metadata
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(DIRECTION))
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
        else {
            return Ok(None);
        };
        let mut directions = Self {
            input: false,
            output: false,
        };
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part.to_ascii_lowercase().as_str() {
                "input" => directions.input = true,
                "output" => directions.output = true,
                _ => {
                    return Err(spec.invalid(
                        &format!("metadata.{DIRECTION}"),
                        format!(
                            "{part:?} is not a direction; use \"input\", \"output\" or \"input, output\""
                        ),
                    ));
                }
            }
        }
        if !directions.input && !directions.output {
            return Err(spec.invalid(
                &format!("metadata.{DIRECTION}"),
                "names no direction; use \"input\", \"output\" or \"input, output\"",
            ));
        }
        Ok(Some(directions))
    }
}

/// A built binding component: an input binding, an output binding, or one component that is
/// both. Which directions are used is the spec's `direction` metadata (see
/// [`Binding::check_direction`]).
#[derive(Debug, Clone)]
pub struct Binding {
    component: Arc<dyn Component>,
    input: Option<Arc<dyn InputBinding>>,
    output: Option<Arc<dyn OutputBinding>>,
}

impl Binding {
    /// A component that only reads events.
    pub fn input_only(component: Arc<dyn InputBinding>) -> Self {
        Self {
            component: component.clone(),
            input: Some(component),
            output: None,
        }
    }

    /// A component that only takes invocations.
    pub fn output_only(component: Arc<dyn OutputBinding>) -> Self {
        Self {
            component: component.clone(),
            input: None,
            output: Some(component),
        }
    }

    /// One component that reads events and takes invocations.
    pub fn input_output<T: InputBinding + OutputBinding>(component: Arc<T>) -> Self {
        Self {
            component: component.clone(),
            input: Some(component.clone()),
            output: Some(component),
        }
    }

    /// The component as an input binding, if it is one.
    pub fn input(&self) -> Option<&Arc<dyn InputBinding>> {
        self.input.as_ref()
    }

    /// The component as an output binding, if it is one.
    pub fn output(&self) -> Option<&Arc<dyn OutputBinding>> {
        self.output.as_ref()
    }

    /// The directions the component supports.
    pub fn supported(&self) -> Directions {
        Directions {
            input: self.input.is_some(),
            output: self.output.is_some(),
        }
    }

    /// The component, seen through its shared lifecycle trait (once, even when it is both).
    pub fn component(&self) -> &dyn Component {
        self.component.as_ref()
    }

    /// Check the spec's `direction` against what the component supports: asking for a
    /// direction the type does not have is a configuration error naming the field.
    pub fn check_direction(&self, spec: &ComponentSpec) -> Result<()> {
        let Some(wanted) = Directions::from_spec(spec)? else {
            return Ok(());
        };
        let supported = self.supported();
        for (wanted, supported, name) in [
            (wanted.input, supported.input, "input"),
            (wanted.output, supported.output, "output"),
        ] {
            if wanted && !supported {
                return Err(spec.invalid(
                    &format!("metadata.{DIRECTION}"),
                    format!("{} cannot be an {name} binding", spec.type_name),
                ));
            }
        }
        Ok(())
    }

    /// The directions a spec uses this component in: its `direction` metadata, or every
    /// supported direction when it has none.
    pub fn directions_in_use(&self, spec: &ComponentSpec) -> Directions {
        let supported = self.supported();
        match Directions::from_spec(spec) {
            Ok(Some(d)) => Directions {
                input: d.input && supported.input,
                output: d.output && supported.output,
            },
            // Validated when the component was built; an unreadable value uses everything.
            Ok(None) | Err(_) => supported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Both;

    #[async_trait]
    impl Component for Both {}

    #[async_trait]
    impl OutputBinding for Both {
        fn operations(&self) -> Vec<String> {
            Vec::new()
        }
        async fn invoke(&self, _: BindingRequest) -> Result<BindingResponse> {
            Ok(BindingResponse::default())
        }
    }

    #[async_trait]
    impl InputBinding for Both {
        async fn read(&self, _: ReadRequest) -> Result<InputStream> {
            Ok(InputStream {
                receiver: mpsc::channel(1).1,
            })
        }
    }

    fn spec(direction: Option<(&str, &str)>) -> ComponentSpec {
        let spec = ComponentSpec::new("b", "bindings.test");
        match direction {
            Some((key, value)) => spec.with_metadata(key, value),
            None => spec,
        }
    }

    const IN: Directions = Directions {
        input: true,
        output: false,
    };
    const OUT: Directions = Directions {
        input: false,
        output: true,
    };
    const BOTH: Directions = Directions {
        input: true,
        output: true,
    };

    #[test]
    fn direction_metadata_reads_as_in_dapr() {
        for (value, expected) in [
            ("input", IN),
            ("output", OUT),
            ("input, output", BOTH),
            (" OUTPUT,Input ", BOTH),
            ("input,", IN),
        ] {
            let got = Directions::from_spec(&spec(Some((DIRECTION, value))));
            assert_eq!(got.ok().flatten(), Some(expected), "{value:?}");
        }
        let key_case = Directions::from_spec(&spec(Some(("Direction", "input"))));
        assert_eq!(key_case.ok().flatten(), Some(IN));
        assert_eq!(Directions::from_spec(&spec(None)).ok().flatten(), None);
        for bad in ["in", "input, both", ","] {
            let err = Directions::from_spec(&spec(Some((DIRECTION, bad)))).expect_err(bad);
            assert!(err.to_string().contains("metadata.direction"), "{err}");
        }
    }

    #[test]
    fn directions_in_use_are_those_asked_for_that_the_type_has() {
        let both = Binding::input_output(Arc::new(Both));
        let output = Binding::output_only(Arc::new(Both));
        assert_eq!(both.supported(), BOTH);
        assert_eq!(output.supported(), OUT);
        assert_eq!(both.directions_in_use(&spec(None)), BOTH);
        assert_eq!(
            both.directions_in_use(&spec(Some((DIRECTION, "input")))),
            IN
        );
        assert!(
            both.check_direction(&spec(Some((DIRECTION, "input"))))
                .is_ok()
        );
        let err = output
            .check_direction(&spec(Some((DIRECTION, "input, output"))))
            .expect_err("no input side");
        assert!(
            err.to_string()
                .contains("bindings.test cannot be an input binding"),
            "{err}"
        );
    }
}
