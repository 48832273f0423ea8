"""CallRail: webhook payloads and signatures (the API client arrives with the fetch step)."""
