//! Plinth's front doors: Layotto gRPC API and the admin listener
