"""The Slack adapter: `/flannel`, approval buttons and run progress, over the same core."""
