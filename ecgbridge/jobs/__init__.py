"""The durable job journal, the state folder and the job runner of the daemon."""
