//! `wasi:config`: a function's `variables` (its config), read-only. Three shapes of the
//! draft are served, all over the same map, so that guests built with any of today's WIT
//! copies link: `store@0.2.0-rc.1` (wasmtime 48's), `store@0.2.0-draft` (the proposal's
//! tag) and `runtime@0.2.0-draft` (the interface's name before the proposal renamed it).

use wasmtime::component::{HasSelf, Linker};

use super::store::Ctx;

mod draft {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/config",
        world: "wasi:config/imports",
        imports: { default: async },
    });
}

mod draft_runtime {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/config",
        world: "wasi:config/imports-runtime",
        imports: { default: async },
    });
}

mod rc1 {
    wasmtime::component::bindgen!({
        path: "../../wit/deps/config-rc1",
        world: "wasi:config/imports",
        imports: { default: async },
    });
}

/// Link every served version of `wasi:config`.
pub(super) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    draft::Imports::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, |c| c)?;
    draft_runtime::ImportsRuntime::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, |c| c)?;
    rc1::Imports::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, |c| c)?;
    Ok(())
}

impl Ctx {
    fn variable(&self, key: &str) -> Option<String> {
        self.env.variables.get(key).cloned()
    }

    /// Every variable, sorted by key (the map's order).
    fn variables(&self) -> Vec<(String, String)> {
        self.env
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl draft::wasi::config::store::Host for Ctx {
    async fn get(
        &mut self,
        key: String,
    ) -> Result<Option<String>, draft::wasi::config::store::Error> {
        Ok(self.variable(&key))
    }

    async fn get_all(
        &mut self,
    ) -> Result<Vec<(String, String)>, draft::wasi::config::store::Error> {
        Ok(self.variables())
    }
}

impl draft_runtime::wasi::config::runtime::Host for Ctx {
    async fn get(
        &mut self,
        key: String,
    ) -> Result<Option<String>, draft_runtime::wasi::config::runtime::ConfigError> {
        Ok(self.variable(&key))
    }

    async fn get_all(
        &mut self,
    ) -> Result<Vec<(String, String)>, draft_runtime::wasi::config::runtime::ConfigError> {
        Ok(self.variables())
    }
}

impl rc1::wasi::config::store::Host for Ctx {
    async fn get(
        &mut self,
        key: String,
    ) -> Result<Option<String>, rc1::wasi::config::store::Error> {
        Ok(self.variable(&key))
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, rc1::wasi::config::store::Error> {
        Ok(self.variables())
    }
}
