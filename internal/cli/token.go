package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/feature/rds/auth"
	"github.com/spf13/cobra"
)

type tokenFlags struct {
	hostname string
	port     int
	username string
	region   string
	profile  string
}

func newTokenCmd(g *globalFlags) *cobra.Command {
	f := &tokenFlags{}
	cmd := &cobra.Command{
		Use:     "token --hostname HOST --port PORT --username USER [--region REGION] [--profile NAME]",
		Aliases: []string{"generate-db-auth-token"},
		Short:   "Generate a database authentication token (same as aws rds generate-db-auth-token)",
		Long: `Generate an IAM database authentication token with your AWS credentials,
exactly as 'aws rds generate-db-auth-token' does, and print it on stdout.
Use the token as the password of a TLS connection to an iamdb listener.

Credentials come from the standard AWS chain: AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, then the shared credentials and
config files (~/.aws/credentials, ~/.aws/config), with --profile or AWS_PROFILE
choosing a profile. The region comes from --region, AWS_REGION,
AWS_DEFAULT_REGION or the profile.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tok, err := generateToken(cmd.Context(), f)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	cmd.AddCommand(newTokenVerifyCmd(g))
	fl := cmd.Flags()
	fl.StringVar(&f.hostname, "hostname", "", "host name of the database endpoint, as the client will connect to it (required)")
	fl.IntVar(&f.port, "port", 0, "port of the database endpoint (required)")
	fl.StringVar(&f.username, "username", "", "database user name to log in as (required)")
	fl.StringVar(&f.region, "region", "", "region the instance is configured with (default from the AWS configuration)")
	fl.StringVar(&f.profile, "profile", "", "AWS profile to take credentials from")
	return cmd
}

func generateToken(ctx context.Context, f *tokenFlags) (string, error) {
	var missing []string
	if f.hostname == "" {
		missing = append(missing, "--hostname")
	}
	if f.port == 0 {
		missing = append(missing, "--port")
	}
	if f.username == "" {
		missing = append(missing, "--username")
	}
	if len(missing) > 0 {
		return "", usagef("missing required flags: %s", strings.Join(missing, ", "))
	}
	if f.port < 1 || f.port > 65535 {
		return "", usagef("--port %d is out of range: use a TCP port between 1 and 65535", f.port)
	}
	if ctx == nil {
		ctx = context.Background()
	}
	cfg, err := loadAWSConfig(ctx, f.profile, f.region)
	if err != nil {
		return "", err
	}
	if cfg.Region == "" {
		return "", errors.New("no region: pass --region or set AWS_REGION (the region must match the iamdb instance's region)")
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return "", fmt.Errorf("no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or choose a profile with --profile): %w", err)
	}
	endpoint := net.JoinHostPort(f.hostname, strconv.Itoa(f.port))
	tok, err := auth.BuildAuthToken(ctx, endpoint, cfg.Region, f.username, cfg.Credentials)
	if err != nil {
		return "", fmt.Errorf("signing the token: %w", err)
	}
	return cliShape(tok), nil
}

// loadAWSConfig resolves credentials the way the AWS CLI does, except that
// the EC2 instance metadata service is never asked: iamdb runs anywhere, and
// probing a link-local address from a laptop only adds a slow timeout.
func loadAWSConfig(ctx context.Context, profile, region string) (aws.Config, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithEC2IMDSClientEnableState(imds.ClientDisabled),
	}
	if profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(profile))
	}
	if region != "" {
		opts = append(opts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	return cfg, nil
}

// botocoreOrder is the parameter order of tokens printed by the AWS CLI.
var botocoreOrder = []string{
	"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
	"X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature",
}

// cliShape turns the Go SDK's token (host:port?sorted-query) into the shape
// the AWS CLI prints (host:port/?query in botocore order). The signature does
// not depend on either, so the result is the very string the CLI would print
// for the same credentials and instant. Encoded values are moved untouched.
func cliShape(tok string) string {
	q := strings.IndexByte(tok, '?')
	if q < 0 {
		return tok
	}
	hostPort := strings.TrimSuffix(tok[:q], "/")
	params := strings.Split(tok[q+1:], "&")
	rank := func(p string) int {
		key, _, _ := strings.Cut(p, "=")
		for i, k := range botocoreOrder {
			if k == key {
				return i
			}
		}
		return len(botocoreOrder)
	}
	ordered := make([]string, 0, len(params))
	for r := 0; r <= len(botocoreOrder); r++ {
		for _, p := range params {
			if rank(p) == r {
				ordered = append(ordered, p)
			}
		}
	}
	return hostPort + "/?" + strings.Join(ordered, "&")
}
