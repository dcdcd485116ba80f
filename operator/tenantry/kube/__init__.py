"""The only layer that talks to the API server: resource paths, the client, the live inventory."""
