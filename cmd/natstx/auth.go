package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/natstx/natstx/messages"
)

// The files `natstx auth init` writes into its directory.
const (
	// authServerConf is the NATS server configuration: the operator, the
	// system account and the natstx account, all public JWTs.
	authServerConf = "nats-auth.conf"
	// authAccountSeed signs new users (auth add-participant); a secret.
	authAccountSeed = "account.nk"
	// authOperatorSeed signs accounts; a secret, only needed to change the
	// account.
	authOperatorSeed = "operator.nk"
)

// credsFile is the credentials file of role (and participant name).
func credsFile(role messages.Role, name string) string {
	if role == messages.RoleParticipant {
		return "participant-" + name + ".creds"
	}
	return string(role) + ".creds"
}

func newAuth() *cobra.Command {
	c := &cobra.Command{
		Use:   "auth",
		Short: "Generate NATS accounts, users and credentials for a secure deployment",
		Long: `auth generates what natstx needs on a shared NATS system: a NATS operator, an
account for natstx with JetStream, and one user per identity, each with the
subject permissions of its role (docs/SECURITY.md):

  coordinator            natstx server: commands, buckets, the API
  operator               natstx tx, saga and audit: the API and the status bucket
  participant-<name>     one participant: its own commands, votes and acks as itself

The server configuration holds public JWTs only; each .creds file is the
secret of one identity, for --creds (or NATSTX_CREDS).`,
	}
	c.AddCommand(newAuthInit(), newAuthAddParticipant())
	groupCommand(c)
	return c
}

func newAuthInit() *cobra.Command {
	var (
		dir          string
		participants []string
		force        bool
	)
	c := &cobra.Command{
		Use:   "init",
		Short: "Write a NATS server configuration and a credentials file for each identity",
		Long: `init creates a NATS operator, a system account and the account NATSTX (JetStream
enabled), and writes into --dir:

  ` + authServerConf + `           the server configuration: operator, accounts,
                            memory resolver (public; load it with
                            'natstx server --nats-config', or include it
                            in a nats-server configuration)
  coordinator.creds         the coordinator's credentials
  operator.creds            the CLI's credentials (tx, saga, audit)
  participant-<name>.creds  one per --participants name
  ` + authAccountSeed + `, ` + authOperatorSeed + `    the signing keys: keep them offline; 'auth
                            add-participant' needs ` + authAccountSeed + `

Files holding secrets are created readable by their owner only. An existing
directory with these files is refused unless --force: new keys make every
credentials file issued before useless.`,
		Example: `  natstx auth init --participants inventory,payment,shipping --dir natstx-auth
  natstx server --nats-config natstx-auth/nats-auth.conf --creds natstx-auth/coordinator.creds
  natstx participant inventory --db inventory.db --creds natstx-auth/participant-inventory.creds
  natstx tx begin --creds natstx-auth/operator.creds -p inventory='{"item":"widget","qty":1}'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(participants) == 0 {
				return usageError{errors.New("--participants is required: the participant names to issue credentials for")}
			}
			names, err := participantNames(participants)
			if err != nil {
				return err
			}
			files, err := authInit(dir, names, force)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "natstx auth: wrote %d files to %s:\n", len(files), dir)
			for _, f := range files {
				fmt.Fprintf(out, "  %s\n", f)
			}
			fmt.Fprintf(out, "run the server with --nats-config %s --creds %s; give each identity only its own .creds file\n",
				filepath.Join(dir, authServerConf), filepath.Join(dir, credsFile(messages.RoleCoordinator, "")))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "natstx-auth", "directory to write the configuration and credentials to (created if missing)")
	c.Flags().StringSliceVar(&participants, "participants", nil, "participant names to issue credentials for, comma-separated")
	c.Flags().BoolVar(&force, "force", false, "replace the keys and credentials of an earlier init in --dir")
	return c
}

func newAuthAddParticipant() *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "add-participant NAME...",
		Short: "Issue credentials for more participants, signed by the account of an earlier init",
		Long: `add-participant writes participant-<name>.creds for each NAME into --dir,
signed with the account key ` + authAccountSeed + ` that 'natstx auth init' left there. The
server needs no change: it trusts any user the account signs.`,
		Example: `  natstx auth add-participant loyalty --dir natstx-auth`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			names, err := participantNames(args)
			if err != nil {
				return err
			}
			seed, err := os.ReadFile(filepath.Join(dir, authAccountSeed))
			if err != nil {
				return fmt.Errorf("reading the account key: %w (run 'natstx auth init' first, or point --dir at its directory)", err)
			}
			account, err := nkeys.FromSeed(seed)
			if err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, authAccountSeed), err)
			}
			for _, n := range names {
				f := credsFile(messages.RoleParticipant, n)
				if err := writeCreds(filepath.Join(dir, f), account, messages.RoleParticipant, n); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "natstx auth: wrote %s\n", filepath.Join(dir, f))
			}
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "natstx-auth", "directory of an earlier 'natstx auth init'")
	return c
}

// participantNames validates and de-duplicates names, sorted.
func participantNames(in []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, n := range in {
		n = strings.TrimSpace(n)
		if err := messages.ValidateName("participant name", n); err != nil {
			return nil, usageError{err}
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// authInit generates the operator, accounts and users and writes their
// files into dir; it returns the files' names.
func authInit(dir string, participants []string, force bool) ([]string, error) {
	if !force {
		for _, f := range []string{authServerConf, authAccountSeed, authOperatorSeed} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return nil, usageError{fmt.Errorf("%s already exists: an earlier 'natstx auth init' wrote it; pass --force to replace every key (the credentials issued before stop working), or use 'natstx auth add-participant'", filepath.Join(dir, f))}
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating --dir: %w", err)
	}
	operator, err := nkeys.CreateOperator()
	if err != nil {
		return nil, err
	}
	opPub, _ := operator.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "natstx"
	sys, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	sysPub, _ := sys.PublicKey()
	oc.SystemAccount = sysPub
	opJWT, err := oc.Encode(operator)
	if err != nil {
		return nil, fmt.Errorf("signing the operator: %w", err)
	}
	sc := jwt.NewAccountClaims(sysPub)
	sc.Name = "SYS"
	sysJWT, err := sc.Encode(operator)
	if err != nil {
		return nil, fmt.Errorf("signing the system account: %w", err)
	}
	account, err := nkeys.CreateAccount()
	if err != nil {
		return nil, err
	}
	accPub, _ := account.PublicKey()
	ac := jwt.NewAccountClaims(accPub)
	ac.Name = "NATSTX"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	accJWT, err := ac.Encode(operator)
	if err != nil {
		return nil, fmt.Errorf("signing the natstx account: %w", err)
	}

	conf := fmt.Sprintf(`# NATS server authorization for natstx, written by 'natstx auth init'.
# Public: it holds JWTs (signed claims), no secret. Load it with
# 'natstx server --nats-config %[1]s', or include it in a nats-server
# configuration. Accounts: SYS (the system account) and NATSTX (natstx's
# identities, JetStream enabled); users are not listed: the server trusts
# any user JWT the NATSTX account signed (the .creds files).
operator: %[2]s
system_account: %[3]s
resolver: MEMORY
resolver_preload: {
  # SYS
  %[3]s: %[4]s
  # NATSTX
  %[5]s: %[6]s
}
`, authServerConf, opJWT, sysPub, sysJWT, accPub, accJWT)
	var files []string
	write := func(name string, data []byte, mode os.FileMode) error {
		if err := writeAtomic(filepath.Join(dir, name), data, mode); err != nil {
			return err
		}
		files = append(files, name)
		return nil
	}
	if err := write(authServerConf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	opSeed, _ := operator.Seed()
	accSeed, _ := account.Seed()
	if err := write(authOperatorSeed, opSeed, 0o600); err != nil {
		return nil, err
	}
	if err := write(authAccountSeed, accSeed, 0o600); err != nil {
		return nil, err
	}
	type identity struct {
		role messages.Role
		name string
	}
	ids := []identity{{messages.RoleCoordinator, ""}, {messages.RoleOperator, ""}}
	for _, p := range participants {
		ids = append(ids, identity{messages.RoleParticipant, p})
	}
	for _, id := range ids {
		f := credsFile(id.role, id.name)
		if err := writeCreds(filepath.Join(dir, f), account, id.role, id.name); err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// writeCreds issues a user of role (participant name) signed by account and
// writes its credentials file.
func writeCreds(path string, account nkeys.KeyPair, role messages.Role, name string) error {
	perms, ok := messages.PermissionsFor(role, name)
	if !ok {
		return usageError{fmt.Errorf("no permissions for role %q, name %q", role, name)}
	}
	user, err := nkeys.CreateUser()
	if err != nil {
		return err
	}
	userPub, _ := user.PublicKey()
	uc := jwt.NewUserClaims(userPub)
	uc.Name = strings.TrimSuffix(credsFile(role, name), ".creds")
	uc.Tags.Add("natstx-role:" + string(role))
	uc.Pub.Allow.Add(perms.PublishAllow...)
	uc.Pub.Deny.Add(perms.PublishDeny...)
	uc.Sub.Allow.Add(perms.SubscribeAllow...)
	uc.Sub.Deny.Add(perms.SubscribeDeny...)
	if perms.AllowResponses {
		uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1}
	}
	userJWT, err := uc.Encode(account)
	if err != nil {
		return fmt.Errorf("signing user %s: %w", uc.Name, err)
	}
	seed, _ := user.Seed()
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	if err != nil {
		return err
	}
	return writeAtomic(path, creds, 0o600)
}

// writeAtomic writes data to path with mode, replacing the file whole (a
// temporary file renamed), so that a secret is never readable by others,
// even for a moment.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
