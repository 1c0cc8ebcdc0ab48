// The graphql-transport-ws client the panel uses for live updates.
export { createClient } from "graphql-ws";
