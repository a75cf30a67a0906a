package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nats-io/nkeys"
	"github.com/spf13/cobra"

	"github.com/natstx/natstx/messages"
	"github.com/natstx/natstx/orchestrator/auth"
)

// The files `natstx auth init` writes into its directory, besides the
// credentials (credsFile) and the account keys (accountSeedFile).
const (
	// authServerConf is the NATS server configuration: the operator, the
	// system account and natstx's three accounts, all public JWTs.
	authServerConf = "nats-auth.conf"
	// authOperatorSeed signs accounts; a secret, only needed to change the
	// accounts.
	authOperatorSeed = "operator.nk"
	// authLegacyAccountSeed is the one account key of an init by a natstx
	// that put every identity in one account. Its users are not trusted by
	// a configuration of three accounts: init refuses a directory holding
	// it without --force, and --force removes it.
	authLegacyAccountSeed = "account.nk"
)

// accountSeedFile is the file of account a's signing key (a secret).
func accountSeedFile(a messages.Account) string {
	switch a {
	case messages.AccountParticipants:
		return "account-participants.nk"
	case messages.AccountOperators:
		return "account-operators.nk"
	}
	return "account-natstx.nk"
}

// credsFile is the credentials file of role (and participant name).
func credsFile(role messages.Role, name string) string {
	return auth.UserName(role, name) + ".creds"
}

func newAuth() *cobra.Command {
	c := &cobra.Command{
		Use:   "auth",
		Short: "Generate NATS accounts, users and credentials for a secure deployment",
		Long: `auth generates what natstx needs on a shared NATS system: a NATS operator,
three accounts for natstx, and one user per identity, each in the account of
its role and with the subject permissions of that role (docs/SECURITY.md):

  account              users                 what they do
  NATSTX               coordinator           natstx server: JetStream, the command
                                             stream and every bucket, the API
  NATSTX_PARTICIPANTS  participant-<name>    one participant each: its own commands,
                                             votes and acks as itself
  NATSTX_OPERATORS     operator              natstx tx, saga and audit: the API and
                                             reading the status bucket

Only NATSTX has JetStream. The other two import from it just what their
identities need (the JetStream API under $JS.natstx.API, which natstx's
clients find by themselves), so that a reply a request asks for never lands
in natstx's streams or buckets; the operators also import the audits from the
participants' account.

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
		Long: `init creates a NATS operator, a system account and natstx's three accounts:
NATSTX (JetStream enabled; the coordinators), NATSTX_PARTICIPANTS (the
participants) and NATSTX_OPERATORS (the operator), with the exports and
imports between them. It writes into --dir:

  ` + authServerConf + `             the server configuration: operator, accounts,
                             memory resolver (public; load it with
                             'natstx server --nats-config', or include it
                             in a nats-server configuration)
  coordinator.creds          the coordinator's credentials (NATSTX)
  operator.creds             the CLI's credentials: tx, saga, audit
                             (NATSTX_OPERATORS)
  participant-<name>.creds   one per --participants name (NATSTX_PARTICIPANTS)
  ` + accountSeedFile(messages.AccountNatstx) + `          the signing keys of the three accounts
  ` + accountSeedFile(messages.AccountParticipants) + `    ('auth add-participant' needs this one)
  ` + accountSeedFile(messages.AccountOperators) + `
  ` + authOperatorSeed + `                the NATS operator's signing key; keep
                             these four offline

Files holding secrets are created readable by their owner only. A directory
with the files of an earlier init (or the ` + authLegacyAccountSeed + ` of an older natstx,
whose single account the new configuration replaces) is refused unless
--force: new keys make every credentials file issued before useless. --force
also removes an old ` + authLegacyAccountSeed + `.`,
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
			files, removed, err := authInit(dir, names, force)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "natstx auth: wrote %d files to %s:\n", len(files), dir)
			for _, f := range files {
				fmt.Fprintf(out, "  %s\n", f)
			}
			for _, f := range removed {
				fmt.Fprintf(out, "natstx auth: removed %s, the account key of an earlier init (no longer trusted)\n", filepath.Join(dir, f))
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
	seedFile := accountSeedFile(messages.AccountParticipants)
	c := &cobra.Command{
		Use:   "add-participant NAME...",
		Short: "Issue credentials for more participants, signed by the participants' account of an earlier init",
		Long: `add-participant writes participant-<name>.creds for each NAME into --dir,
signed with the key of the participants' account (NATSTX_PARTICIPANTS),
` + seedFile + `, that 'natstx auth init' left there. The server needs no
change: it trusts any user that account signs.`,
		Example: `  natstx auth add-participant loyalty --dir natstx-auth`,
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			names, err := participantNames(args)
			if err != nil {
				return err
			}
			account, err := readAccountSeed(dir, messages.AccountParticipants)
			if err != nil {
				return err
			}
			for _, n := range names {
				f := credsFile(messages.RoleParticipant, n)
				creds, err := auth.Creds(account, messages.RoleParticipant, n)
				if err != nil {
					return err
				}
				if err := writeAtomic(filepath.Join(dir, f), creds, 0o600); err != nil {
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

// readAccountSeed reads the signing key of account a that `auth init` wrote
// into dir.
func readAccountSeed(dir string, a messages.Account) (nkeys.KeyPair, error) {
	path := filepath.Join(dir, accountSeedFile(a))
	seed, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if _, lerr := os.Stat(filepath.Join(dir, authLegacyAccountSeed)); lerr == nil {
			return nil, fmt.Errorf("%s holds the single account of an older 'natstx auth init', not the account %s of this natstx: run 'natstx auth init --force' there to generate the three accounts (every identity gets new credentials, and the servers the new %s)",
				dir, a, authServerConf)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("reading the key of the account %s: %w (run 'natstx auth init' first, or point --dir at its directory)", a, err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicAccountKey(pub) {
		return nil, fmt.Errorf("%s: not the key of a NATS account", path)
	}
	return kp, nil
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

// authConfHeader starts nats-auth.conf.
const authConfHeader = `# NATS server authorization for natstx, written by 'natstx auth init'.
# Public: it holds JWTs (signed claims), no secret. Load it with
# 'natstx server --nats-config ` + authServerConf + `', or include it in a nats-server
# configuration.
#
# Accounts:
#   SYS                  the system account
#   NATSTX               the coordinators; JetStream: the command stream and
#                        every bucket
#   NATSTX_PARTICIPANTS  the participants; no JetStream: it imports the pulls
#                        and acks of their consumers (the JetStream API under
#                        ` + messages.JetStreamAPIPrefix + `), the reply subjects and the
#                        in-doubt question from NATSTX, and exports the audits
#   NATSTX_OPERATORS     the operators (the CLI's tx, saga and audit); no
#                        JetStream: it imports the coordinator API, reading the
#                        status bucket (under ` + messages.JetStreamAPIPrefix + `) and the
#                        audits
# A request that crosses accounts has its reply subject rewritten into the
# requester's account, so that no reply lands in natstx's streams or buckets.
# Users are not listed: the server trusts any user JWT an account signed
# (the .creds files).
`

// authInit generates the operator, accounts and users and writes their
// files into dir; it returns the files' names, and the names of the files
// of an older init it removed (--force).
func authInit(dir string, participants []string, force bool) (files, removed []string, err error) {
	if !force {
		check := []string{authServerConf, authOperatorSeed, authLegacyAccountSeed}
		for _, a := range messages.Accounts() {
			check = append(check, accountSeedFile(a))
		}
		for _, f := range check {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return nil, nil, usageError{fmt.Errorf("%s already exists: an earlier 'natstx auth init' wrote it; pass --force to replace every key (the credentials issued before stop working), or use 'natstx auth add-participant'", filepath.Join(dir, f))}
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, nil, err
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("creating --dir: %w", err)
	}
	keys, err := auth.NewKeys()
	if err != nil {
		return nil, nil, err
	}
	conf, err := keys.ServerConfig()
	if err != nil {
		return nil, nil, err
	}
	write := func(name string, data []byte, mode os.FileMode) error {
		if err := writeAtomic(filepath.Join(dir, name), data, mode); err != nil {
			return err
		}
		files = append(files, name)
		return nil
	}
	if err := write(authServerConf, []byte(authConfHeader+conf), 0o644); err != nil {
		return nil, nil, err
	}
	opSeed, err := keys.Operator.Seed()
	if err != nil {
		return nil, nil, err
	}
	if err := write(authOperatorSeed, opSeed, 0o600); err != nil {
		return nil, nil, err
	}
	for _, a := range messages.Accounts() {
		s, err := keys.Accounts[a].Seed()
		if err != nil {
			return nil, nil, err
		}
		if err := write(accountSeedFile(a), s, 0o600); err != nil {
			return nil, nil, err
		}
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
		creds, err := keys.Creds(id.role, id.name)
		if err != nil {
			return nil, nil, err
		}
		if err := write(credsFile(id.role, id.name), creds, 0o600); err != nil {
			return nil, nil, err
		}
	}
	// The key of an older init's single account: no server on this
	// configuration trusts what it signs.
	legacy := filepath.Join(dir, authLegacyAccountSeed)
	if err := os.Remove(legacy); err == nil {
		removed = append(removed, authLegacyAccountSeed)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("removing %s, the account key of an earlier init: %w", legacy, err)
	}
	return files, removed, nil
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
