package ssh

// ServerVersion is the server's identification string, for the end-to-end
// tests that check which server answered.
func ServerVersion(c *Client) string { return string(c.conn.ServerVersion()) }
