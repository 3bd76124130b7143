"""Agency-side code: demo agency web apps, an agency API and an access-token verifier."""
